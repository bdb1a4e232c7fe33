//! The server name a TLS ClientHello asks for (RFC 8446 §4.1.2, RFC 6066 §3), read from
//! the first bytes a client sends through a `CONNECT` tunnel, so that an allowed address
//! cannot be used to reach another name behind the same front.
//!
//! Pure: [`read`] looks at bytes only. The hello must arrive in one TLS record (every
//! common client sends it so); one spread over several records is [`Hello::Unreadable`],
//! which the proxy refuses: it never guesses in the step's favour.

/// The longest TLS record (2^14 bytes of plaintext) plus its 5-byte header.
pub(super) const MAX_RECORD: usize = (1 << 14) + 5;

/// What the first bytes of a tunnel say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Hello {
    /// Not TLS at all (the first byte is not a handshake record).
    NotTls,
    /// More bytes are needed.
    Incomplete,
    /// A ClientHello, with the server name it asks for, if any.
    Name(Option<String>),
    /// A TLS handshake this reader cannot follow.
    Unreadable,
}

/// Reads `bytes`, the start of what the client sent.
pub(super) fn read(bytes: &[u8]) -> Hello {
    match bytes.first() {
        None => return Hello::Incomplete,
        Some(0x16) => {}
        Some(_) => return Hello::NotTls,
    }
    if bytes.len() < 5 {
        return Hello::Incomplete;
    }
    let record_len = usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
    if record_len + 5 > MAX_RECORD {
        return Hello::Unreadable;
    }
    let Some(record) = bytes.get(5..5 + record_len) else {
        return Hello::Incomplete;
    };
    client_hello(record).map_or(Hello::Unreadable, Hello::Name)
}

/// The server name of a handshake record holding a whole ClientHello; `None` (outer) when
/// it is not one.
fn client_hello(record: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(record);
    if r.u8()? != 1 {
        return None;
    }
    let len = r.u24()?;
    let mut body = Reader(r.take(len)?);
    body.take(2 + 32)?; // version, random
    let session = usize::from(body.u8()?);
    body.take(session)?;
    let suites = usize::from(body.u16()?);
    body.take(suites)?;
    let compression = usize::from(body.u8()?);
    body.take(compression)?;
    if body.0.is_empty() {
        return Some(None);
    }
    let extensions = usize::from(body.u16()?);
    let mut extensions = Reader(body.take(extensions)?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let len = usize::from(extensions.u16()?);
        let data = extensions.take(len)?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader(data);
        let list_len = usize::from(list.u16()?);
        let mut names = Reader(list.take(list_len)?);
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let len = usize::from(names.u16()?);
            let name = names.take(len)?;
            if name_type == 0 {
                return Some(Some(String::from_utf8(name.to_vec()).ok()?));
            }
        }
        return Some(None);
    }
    Some(None)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

/// A minimal ClientHello record naming `name` (or none), for tests.
#[cfg(test)]
pub(super) fn hello_for(name: Option<&str>) -> Vec<u8> {
    let mut extensions = Vec::new();
    if let Some(name) = name {
        let name = name.as_bytes();
        let entry_len = 3 + name.len();
        extensions.extend_from_slice(&0u16.to_be_bytes());
        extensions.extend_from_slice(&u16::try_from(2 + entry_len).unwrap().to_be_bytes());
        extensions.extend_from_slice(&u16::try_from(entry_len).unwrap().to_be_bytes());
        extensions.push(0);
        extensions.extend_from_slice(&u16::try_from(name.len()).unwrap().to_be_bytes());
        extensions.extend_from_slice(name);
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend_from_slice(&u16::try_from(extensions.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&extensions);
    let mut handshake = vec![1];
    handshake.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 3, 1];
    record.extend_from_slice(&u16::try_from(handshake.len()).unwrap().to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_server_name_of_a_client_hello() {
        let hello = hello_for(Some("pypi.org"));
        assert_eq!(read(&hello), Hello::Name(Some("pypi.org".into())));
        assert_eq!(read(&hello_for(None)), Hello::Name(None));
        assert_eq!(read(&hello[..hello.len() - 1]), Hello::Incomplete);
        assert_eq!(read(&hello[..3]), Hello::Incomplete);
        assert_eq!(read(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
    }

    #[test]
    fn a_hello_it_cannot_follow_is_unreadable_not_nameless() {
        let mut hello = hello_for(Some("pypi.org"));
        // The handshake claims more than the record holds (a hello over two records).
        hello[7] = 0xff;
        assert_eq!(read(&hello), Hello::Unreadable);
        let mut not_hello = hello_for(Some("pypi.org"));
        not_hello[5] = 2;
        assert_eq!(read(&not_hello), Hello::Unreadable);
    }
}
