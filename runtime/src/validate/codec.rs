//! [`ValidatingCodec`]: tonic's prost codec, checking each request message
//! as it is decoded.

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstEncoder};

use super::Validate;

/// The codec of a generated server whose methods' inputs have rules: it
/// encodes as tonic's [`ProstCodec`] does, and decodes each request message
/// and then [checks](super::check) it, so a message that breaks a rule is
/// an error of the request stream, never a message the handler sees.
///
/// Codegen names it as the codec of such servers; the generated clients
/// keep tonic's (a client does not check the server's answers).
#[derive(Debug, Clone)]
pub struct ValidatingCodec<T, U> {
    prost: ProstCodec<T, U>,
}

impl<T, U> Default for ValidatingCodec<T, U> {
    fn default() -> Self {
        ValidatingCodec {
            prost: ProstCodec::default(),
        }
    }
}

impl<T, U> Codec for ValidatingCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Validate + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ValidatingDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.prost.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ValidatingDecoder {
            _message: PhantomData,
        }
    }
}

/// The decoder of a [`ValidatingCodec`].
#[derive(Debug)]
pub struct ValidatingDecoder<U> {
    _message: PhantomData<U>,
}

impl<U: prost::Message + Default + Validate> Decoder for ValidatingDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let message = U::decode(buf).map_err(|error| Status::internal(error.to_string()))?;
        super::check(&message)?;
        Ok(Some(message))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}
