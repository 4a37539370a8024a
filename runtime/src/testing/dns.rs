//! [`TestDns`]: a DNS server on 127.0.0.1 for tests of clients that
//! resolve `dns:///` targets (hickory-server, in the test's process).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_server::Server as DnsServer;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::rr::rdata::{A, AAAA, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

/// Why a [`TestDns`] did not start, or a name could not be set.
#[derive(Debug, thiserror::Error)]
pub enum TestDnsError {
    /// A zone or record name that is not a DNS name.
    #[error("{0:?} is not a DNS name: {1}")]
    Name(String, String),
    /// The zone could not be made.
    #[error("making the zone {0}: {1}")]
    Zone(String, String),
    /// Its UDP socket could not be bound.
    #[error("binding 127.0.0.1:0 for DNS: {0}")]
    Bind(#[from] std::io::Error),
}

/// An authoritative DNS server for one zone, on an ephemeral UDP port of
/// 127.0.0.1, whose records a test sets and changes as it runs (a replica
/// added, one removed). Point a client at it with
/// `config.client.dns.nameservers = vec![dns.addr()]`. Records have a TTL
/// of 0: clients see a change at their next resolution.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::net::Ipv4Addr;
/// use keel_rpc::testing::TestDns;
///
/// let dns = TestDns::start("test.").await?;
/// let replicas = [Ipv4Addr::new(127, 0, 0, 2).into(), Ipv4Addr::new(127, 0, 0, 3).into()];
/// dns.set("users.test.", &replicas).await?;
/// let mut config = keel_rpc::config::Config::<()>::default();
/// config.client.dns.nameservers = vec![dns.addr()];
/// // client.connect("dns:///users.test:50051") now finds both.
/// # Ok(()) }
/// ```
pub struct TestDns {
    addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler<TokioRuntimeProvider>>,
    server: Option<DnsServer<Catalog>>,
}

impl std::fmt::Debug for TestDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDns")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn name(text: &str) -> Result<Name, TestDnsError> {
    Name::from_ascii(text).map_err(|e| TestDnsError::Name(text.to_owned(), e.to_string()))
}

impl TestDns {
    /// Serves `zone` (such as `"test."`), with no record but its SOA yet.
    pub async fn start(zone: &str) -> Result<TestDns, TestDnsError> {
        let origin = name(zone)?;
        let soa = SOA::new(
            name(&format!("ns.{zone}"))?,
            name(&format!("admin.{zone}"))?,
            1,
            60,
            60,
            60,
            0,
        );
        let mut soa_set = RecordSet::new(origin.clone(), RecordType::SOA, 1);
        soa_set.insert(Record::from_rdata(origin.clone(), 0, RData::SOA(soa)), 1);
        let records = BTreeMap::from([(
            RrKey::new(LowerName::new(&origin), RecordType::SOA),
            soa_set,
        )]);
        let handler =
            InMemoryZoneHandler::new(origin.clone(), records, ZoneType::Primary, AxfrPolicy::Deny)
                .map_err(|e| TestDnsError::Zone(zone.to_owned(), e.to_string()))?;
        let handler = Arc::new(handler);
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![handler.clone()]);
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let mut server = DnsServer::new(catalog);
        server.register_socket(socket);
        Ok(TestDns {
            addr,
            zone: handler,
            server: Some(server),
        })
    }

    /// Where it answers.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `name` (fully qualified, such as `"users.test."`) has the
    /// addresses `ips` from now on, as A and AAAA records; none: it has
    /// no address.
    pub async fn set(&self, name: &str, ips: &[IpAddr]) -> Result<(), TestDnsError> {
        let name = self::name(name)?;
        let mut records = self.zone.records_mut().await;
        for kind in [RecordType::A, RecordType::AAAA] {
            let mut set = RecordSet::new(name.clone(), kind, 1);
            for ip in ips {
                let data = match (ip, kind) {
                    (IpAddr::V4(ip), RecordType::A) => RData::A(A(*ip)),
                    (IpAddr::V6(ip), RecordType::AAAA) => RData::AAAA(AAAA(*ip)),
                    _ => continue,
                };
                set.insert(Record::from_rdata(name.clone(), 0, data), 1);
            }
            records.insert(RrKey::new(LowerName::new(&name), kind), Arc::new(set));
        }
        Ok(())
    }

    /// Stops answering (as a DNS server gone down): queries time out.
    pub async fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.shutdown_gracefully().await;
        }
    }
}
