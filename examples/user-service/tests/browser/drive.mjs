// Opens each page given in headless Chromium and, from it (its origin, its
// CORS rules), calls user-service's REST route and its gRPC-Web method with
// and without a token. Prints one JSON object per page, keyed by its URL.
//
// Input (environment): CHROMIUM (the browser's path), API (the service's
// base URL), PAGES (comma-separated page URLs), TOKEN, USER_ID.
import { chromium } from "playwright-core";

const { CHROMIUM, API, PAGES, TOKEN, USER_ID } = process.env;

// What runs in the page: plain fetch(), as a web app would call the service.
async function calls({ api, token, id }) {
  const outcome = async (call) => {
    try {
      return await call();
    } catch (error) {
      // A request CORS refuses rejects with a TypeError and nothing else.
      return { refused: `${error.name}: ${error.message}` };
    }
  };
  const auth = (withToken) => (withToken ? { authorization: `Bearer ${token}` } : {});

  const rest = (withToken) =>
    outcome(async () => {
      const response = await fetch(`${api}/v1/users/${encodeURIComponent(id)}`, {
        headers: auth(withToken),
      });
      return { status: response.status, json: await response.json() };
    });

  // gRPC-Web: one length-prefixed GetUserRequest (field 1, the id).
  const grpcWeb = (withToken) =>
    outcome(async () => {
      const idBytes = new TextEncoder().encode(id);
      const message = new Uint8Array([0x0a, idBytes.length, ...idBytes]);
      const body = new Uint8Array(5 + message.length);
      new DataView(body.buffer).setUint32(1, message.length);
      body.set(message, 5);
      const response = await fetch(`${api}/user.v1.UserService/GetUser`, {
        method: "POST",
        headers: {
          "content-type": "application/grpc-web+proto",
          "x-grpc-web": "1",
          ...auth(withToken),
        },
        body,
      });
      const bytes = new Uint8Array(await response.arrayBuffer());
      const frames = [];
      for (let at = 0; at + 5 <= bytes.length; ) {
        const length = new DataView(bytes.buffer, at + 1, 4).getUint32(0);
        frames.push({ flag: bytes[at], payload: bytes.slice(at + 5, at + 5 + length) });
        at += 5 + length;
      }
      const trailers = frames
        .filter((f) => f.flag & 0x80)
        .map((f) => new TextDecoder().decode(f.payload))
        .join("");
      return {
        status: response.status,
        // A trailers-only answer has its status in the headers, which the
        // page may read only if CORS exposes them.
        grpcStatus: response.headers.get("grpc-status"),
        trailers,
        messages: frames.filter((f) => !(f.flag & 0x80)).map((f) => Array.from(f.payload)),
      };
    });

  return {
    rest: await rest(true),
    restWithoutToken: await rest(false),
    grpcWeb: await grpcWeb(true),
    grpcWebWithoutToken: await grpcWeb(false),
  };
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  // Root in a container has no user namespace for Chromium's sandbox.
  args: ["--no-sandbox"],
  timeout: 30_000,
});
try {
  const results = {};
  for (const url of PAGES.split(",")) {
    const page = await browser.newPage();
    page.setDefaultTimeout(15_000);
    await page.goto(url);
    results[url] = await page.evaluate(calls, { api: API, token: TOKEN, id: USER_ID });
    await page.close();
  }
  console.log(JSON.stringify(results));
} finally {
  await browser.close();
}
