//! Just enough of the Redis protocol (RESP2) to ask a redis-server the run
//! started about itself: `CLUSTER INFO`, `CLUSTER NODES`, `INFO`, `CLUSTER
//! MYID`. One connection per command, every command bounded in time; the
//! load test has no Redis client dependency and needs none for this.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// How long one command (connect, send, read the reply) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest bulk string accepted (`CLUSTER NODES` of a small cluster, `INFO`).
const MAX_BULK: usize = 4 << 20;

/// A reply, as far as the load test needs to tell them apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `+OK` and other simple strings, and bulk strings (lossy UTF-8).
    Text(String),
    /// `:N`.
    Integer(i64),
    /// `$-1` or `*-1`.
    Nil,
    /// `*N` followed by N replies.
    Array(Vec<Reply>),
}

/// Sends `args` as one command to the redis-server on `127.0.0.1:port` and
/// reads its reply. A `-ERR ...` reply is an `Err` naming the command.
pub(crate) async fn command(port: u16, args: &[&str]) -> Result<Reply> {
    let attempt = async {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connecting to redis on port {port}"))?;
        let mut stream = BufReader::new(stream);
        stream
            .get_mut()
            .write_all(&encode(args))
            .await
            .context("sending the command")?;
        read_reply(&mut stream).await
    };
    match tokio::time::timeout(COMMAND_TIMEOUT, attempt).await {
        Ok(result) => result.with_context(|| format!("redis port {port}: {}", args.join(" "))),
        Err(_) => bail!(
            "redis port {port}: {} got no reply within {COMMAND_TIMEOUT:?}",
            args.join(" ")
        ),
    }
}

/// Like [`command`], for commands answering one string (`INFO`, `CLUSTER
/// NODES`, ...).
pub(crate) async fn text(port: u16, args: &[&str]) -> Result<String> {
    match command(port, args).await? {
        Reply::Text(text) => Ok(text),
        other => bail!(
            "redis port {port}: {} answered {other:?}, not a string",
            args.join(" ")
        ),
    }
}

/// The value of `key` in `INFO`-style text (`key:value` lines).
pub(crate) fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.trim_end()
            .strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(':'))
    })
}

/// The command as a RESP array of bulk strings.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one reply (arrays iteratively, so no recursion in async code).
async fn read_reply<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> Result<Reply> {
    // Open arrays: (items so far, items expected).
    let mut open: Vec<(Vec<Reply>, usize)> = Vec::new();
    loop {
        let mut reply = read_one(reader).await?;
        // An array header comes back as an empty array with its length.
        if let Some(len) = reply.1
            && len > 0
        {
            open.push((Vec::with_capacity(len.min(1024)), len));
            continue;
        }
        loop {
            match open.last_mut() {
                None => return Ok(reply.0),
                Some((items, len)) => {
                    items.push(reply.0);
                    if items.len() < *len {
                        break;
                    }
                    let (items, _) = open.pop().context("an open array")?;
                    reply = (Reply::Array(items), None);
                }
            }
        }
    }
}

/// Reads one element: the reply, and for an array header its length (the
/// reply is then an empty array to be filled).
async fn read_one<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> Result<(Reply, Option<usize>)> {
    let mut line = String::new();
    let n = reader
        .read_line(&mut line)
        .await
        .context("reading the reply")?;
    if n == 0 {
        bail!("the connection closed before the reply");
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" => Ok((Reply::Text(rest.to_string()), None)),
        "-" => bail!("error reply: {rest}"),
        ":" => Ok((
            Reply::Integer(rest.parse().context("an integer reply")?),
            None,
        )),
        "$" => {
            let len: i64 = rest.parse().context("a bulk length")?;
            let Ok(len) = usize::try_from(len) else {
                return Ok((Reply::Nil, None));
            };
            if len > MAX_BULK {
                bail!("a bulk reply of {len} bytes is more than expected");
            }
            let mut bytes = vec![0u8; len + 2];
            reader
                .read_exact(&mut bytes)
                .await
                .context("reading a bulk reply")?;
            bytes.truncate(len);
            Ok((
                Reply::Text(String::from_utf8_lossy(&bytes).into_owned()),
                None,
            ))
        }
        "*" => {
            let len: i64 = rest.parse().context("an array length")?;
            match usize::try_from(len) {
                Ok(len) => Ok((Reply::Array(Vec::new()), Some(len))),
                Err(_) => Ok((Reply::Nil, None)),
            }
        }
        _ => bail!("unexpected reply line {line:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{Reply, encode, info_field, read_reply};

    async fn parse(bytes: &[u8]) -> anyhow::Result<Reply> {
        let mut reader = tokio::io::BufReader::new(bytes);
        read_reply(&mut reader).await
    }

    #[tokio::test]
    async fn replies_of_every_kind_are_read() {
        assert_eq!(
            parse(b"+OK\r\n").await.expect("ok"),
            Reply::Text("OK".into())
        );
        assert_eq!(parse(b":42\r\n").await.expect("int"), Reply::Integer(42));
        assert_eq!(parse(b"$-1\r\n").await.expect("nil"), Reply::Nil);
        assert_eq!(
            parse(b"$5\r\na\r\nbc\r\n").await.expect("bulk"),
            Reply::Text("a\r\nbc".into())
        );
        assert_eq!(
            parse(b"*2\r\n*1\r\n:1\r\n$1\r\nx\r\n")
                .await
                .expect("nested"),
            Reply::Array(vec![
                Reply::Array(vec![Reply::Integer(1)]),
                Reply::Text("x".into())
            ])
        );
        assert_eq!(parse(b"*0\r\n").await.expect("empty"), Reply::Array(vec![]));
        let err = parse(b"-ERR nope\r\n").await.expect_err("error reply");
        assert!(err.to_string().contains("ERR nope"), "{err}");
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            encode(&["INFO", "commandstats"]),
            b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n"
        );
    }

    #[test]
    fn info_fields_are_found_by_key() {
        let info = "# Cluster\r\ncluster_state:ok\r\ncluster_slots_ok:16384\r\n";
        assert_eq!(info_field(info, "cluster_state"), Some("ok"));
        assert_eq!(info_field(info, "cluster_slots_ok"), Some("16384"));
        assert_eq!(info_field(info, "cluster"), None);
    }
}
