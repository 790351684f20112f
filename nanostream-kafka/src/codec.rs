//! Turning payload bytes into values and back.

use std::marker::PhantomData;

use nanostream::error::BoxError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Decodes a message payload into a value.
///
/// Implemented by the codecs of this module and by any
/// `Fn(&[u8]) -> Result<T, E>` closure, for formats of your own.
///
/// # Examples
///
/// ```
/// use nanostream_kafka::Decoder;
///
/// let csv = |bytes: &[u8]| -> Result<Vec<String>, std::str::Utf8Error> {
///     Ok(std::str::from_utf8(bytes)?.split(',').map(str::to_owned).collect())
/// };
/// assert_eq!(csv.decode(b"a,b").unwrap(), ["a", "b"]);
/// ```
pub trait Decoder<T>: Send + Sync + 'static {
    /// Decodes `bytes`.
    ///
    /// # Errors
    ///
    /// Why the bytes are not a `T`.
    fn decode(&self, bytes: &[u8]) -> Result<T, BoxError>;
}

/// Encodes a value into a message payload.
pub trait Encoder<T>: Send + Sync + 'static {
    /// Returns the payload for `value`: either written into `buf` (an empty
    /// scratch buffer the sink reuses) or, when the value already is its
    /// payload, borrowed from the value without a copy.
    ///
    /// # Errors
    ///
    /// Why the value cannot be encoded.
    fn encode<'a>(&self, value: &'a T, buf: &'a mut Vec<u8>) -> Result<&'a [u8], BoxError>;
}

impl<T, E, F> Decoder<T> for F
where
    F: Fn(&[u8]) -> Result<T, E> + Send + Sync + 'static,
    E: Into<BoxError>,
{
    fn decode(&self, bytes: &[u8]) -> Result<T, BoxError> {
        self(bytes).map_err(Into::into)
    }
}

/// JSON through serde_json, for any `Serialize` / `DeserializeOwned` type
/// (including `serde_json::Value`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl<T: DeserializeOwned> Decoder<T> for Json {
    fn decode(&self, bytes: &[u8]) -> Result<T, BoxError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

impl<T: Serialize> Encoder<T> for Json {
    fn encode<'a>(&self, value: &'a T, buf: &'a mut Vec<u8>) -> Result<&'a [u8], BoxError> {
        serde_json::to_writer(&mut *buf, value)?;
        Ok(buf)
    }
}

/// bincode (standard configuration) through serde: compact and fast,
/// between programs that share the Rust types.
///
/// # Hostile payloads
///
/// A length prefix is checked before anything is allocated for it: a
/// payload of `n` bytes never makes the decoder allocate a string or byte
/// buffer of more than `max(64 KiB, 16 × n)` bytes (a valid value never
/// claims more than its payload), so a few bytes claiming gigabytes are a
/// decode error, not an abort. Collections preallocate at most about 1 MiB
/// each before their elements are read (serde's cautious size hint).
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

/// Decodes with a bincode limit on the bytes a value may claim: the
/// smallest of a few sizes, 16 times apart, that the payload fits in.
fn decode_limited<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), bincode::error::DecodeError> {
    use bincode::config::standard;
    use bincode::serde::decode_from_slice;
    const KIB_64: usize = 1 << 16;
    const MIB_1: usize = 1 << 20;
    const MIB_16: usize = 1 << 24;
    const MIB_256: usize = 1 << 28;
    const GIB_4: usize = 1 << 32;
    match bytes.len() {
        n if n <= KIB_64 => decode_from_slice(bytes, standard().with_limit::<KIB_64>()),
        n if n <= MIB_1 => decode_from_slice(bytes, standard().with_limit::<MIB_1>()),
        n if n <= MIB_16 => decode_from_slice(bytes, standard().with_limit::<MIB_16>()),
        n if n <= MIB_256 => decode_from_slice(bytes, standard().with_limit::<MIB_256>()),
        _ => decode_from_slice(bytes, standard().with_limit::<GIB_4>()),
    }
}

impl<T: DeserializeOwned> Decoder<T> for Bincode {
    fn decode(&self, bytes: &[u8]) -> Result<T, BoxError> {
        let (value, read) = decode_limited(bytes)?;
        if read != bytes.len() {
            return Err(format!("{} trailing bytes after the bincode value", bytes.len() - read).into());
        }
        Ok(value)
    }
}

impl<T: Serialize> Encoder<T> for Bincode {
    fn encode<'a>(&self, value: &'a T, buf: &'a mut Vec<u8>) -> Result<&'a [u8], BoxError> {
        bincode::serde::encode_into_std_write(value, &mut *buf, bincode::config::standard())?;
        Ok(buf)
    }
}

/// UTF-8 text as `String`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8;

impl Decoder<String> for Utf8 {
    fn decode(&self, bytes: &[u8]) -> Result<String, BoxError> {
        Ok(std::str::from_utf8(bytes)?.to_owned())
    }
}

impl<T: AsRef<str>> Encoder<T> for Utf8 {
    fn encode<'a>(&self, value: &'a T, _buf: &'a mut Vec<u8>) -> Result<&'a [u8], BoxError> {
        Ok(value.as_ref().as_bytes())
    }
}

/// The payload bytes as they are, as `Vec<u8>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Decoder<Vec<u8>> for Raw {
    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, BoxError> {
        Ok(bytes.to_vec())
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for Raw {
    fn encode<'a>(&self, value: &'a T, _buf: &'a mut Vec<u8>) -> Result<&'a [u8], BoxError> {
        Ok(value.as_ref())
    }
}

/// An encoder made of a closure; see [`encode_with`].
pub struct EncodeWith<F, T> {
    f: F,
    _t: PhantomData<fn(&T)>,
}

impl<F, T> std::fmt::Debug for EncodeWith<F, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncodeWith")
    }
}

/// An encoder from a closure that appends the encoding of a value to a
/// buffer, for formats of your own.
///
/// # Examples
///
/// ```
/// use nanostream_kafka::{Encoder, encode_with};
///
/// let csv = encode_with(|row: &Vec<String>, buf: &mut Vec<u8>| {
///     buf.extend_from_slice(row.join(",").as_bytes());
///     Ok::<(), std::convert::Infallible>(())
/// });
/// let mut buf = Vec::new();
/// let row = vec!["a".to_owned(), "b".to_owned()];
/// assert_eq!(csv.encode(&row, &mut buf).unwrap(), b"a,b");
/// ```
pub fn encode_with<F, T, E>(f: F) -> EncodeWith<F, T>
where
    F: Fn(&T, &mut Vec<u8>) -> Result<(), E> + Send + Sync + 'static,
    E: Into<BoxError>,
{
    EncodeWith { f, _t: PhantomData }
}

impl<F, T, E> Encoder<T> for EncodeWith<F, T>
where
    F: Fn(&T, &mut Vec<u8>) -> Result<(), E> + Send + Sync + 'static,
    E: Into<BoxError>,
    T: 'static,
{
    fn encode<'a>(&self, value: &'a T, buf: &'a mut Vec<u8>) -> Result<&'a [u8], BoxError> {
        (self.f)(value, &mut *buf).map_err(Into::into)?;
        Ok(buf)
    }
}
