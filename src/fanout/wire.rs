//! The server side of the WebSocket wire: writing frames to a fan's socket.
//!
//! Server frames are never masked (RFC 6455 §5.1), so a frame's bytes are the
//! same for every fan: its MessagePack payload, encoded once per event and
//! shared as [`Bytes`], goes out behind a 2–10 byte header formatted on the
//! stack, with one vectored write per batch of frames. Nothing is copied per
//! fan and no per-connection write buffer is kept.
//!
//! Two ways to write:
//!
//! - [`Socket::try_write_batch`] never waits: it makes one non-blocking attempt and
//!   reports how far it got. The fan's [`Outbox`](super::outbox::Outbox) uses
//!   it to write a frame straight from the game actor's fan-out when nothing
//!   is queued before it, so the common delivery costs one `writev` and no
//!   task wake-up.
//! - [`Socket::write_all`] is the writer task's: it waits for the socket, and
//!   finishes a batch the non-blocking path could not.
//!
//! Client frames are read by tungstenite (see `session`), which also formats
//! its control replies (pongs, the close reply); those arrive here as
//! complete frames ([`Wire::Framed`]).

use std::fmt;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::net::tcp::OwnedWriteHalf;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

/// Longest WebSocket frame header: 2 bytes + a 64-bit length (no mask).
const MAX_HEADER: usize = 10;

/// Frames written with one vectored write at most (two slices each).
const SLICES_PER_WRITE: usize = 64;

/// How the bytes of one outgoing item are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wire {
    /// A MessagePack payload, sent as one binary frame.
    Binary(Bytes),
    /// Bytes already framed (control frames, or the unsent rest of a frame
    /// a non-blocking write cut short).
    Framed(Bytes),
}

impl AsRef<Wire> for Wire {
    fn as_ref(&self) -> &Wire {
        self
    }
}

impl Wire {
    /// Bytes this item puts on the wire, header included.
    pub fn wire_len(&self) -> usize {
        match self {
            Wire::Binary(payload) => Header::binary(payload.len()).len + payload.len(),
            Wire::Framed(bytes) => bytes.len(),
        }
    }

    /// The payload (for a binary frame) or the framed bytes.
    pub fn bytes(&self) -> &Bytes {
        match self {
            Wire::Binary(b) | Wire::Framed(b) => b,
        }
    }

    /// What is left to send after the first `written` bytes went out.
    fn rest(&self, written: usize) -> Wire {
        match self {
            Wire::Framed(bytes) => Wire::Framed(bytes.slice(written..)),
            Wire::Binary(payload) => {
                let header = Header::binary(payload.len());
                if written >= header.len {
                    Wire::Framed(payload.slice(written - header.len..))
                } else {
                    let mut rest = Vec::with_capacity(header.len - written + payload.len());
                    rest.extend_from_slice(&header.bytes[written..header.len]);
                    rest.extend_from_slice(payload);
                    Wire::Framed(Bytes::from(rest))
                }
            }
        }
    }
}

/// A binary frame's header, formatted on the stack.
#[derive(Debug, Clone, Copy)]
struct Header {
    bytes: [u8; MAX_HEADER],
    len: usize,
}

impl Header {
    fn binary(payload_len: usize) -> Header {
        let header = FrameHeader {
            opcode: OpCode::Data(Data::Binary),
            ..FrameHeader::default()
        };
        let mut bytes = [0u8; MAX_HEADER];
        let len = header.len(payload_len as u64);
        // A header never exceeds MAX_HEADER bytes, so formatting into the
        // array cannot run out of room.
        let _ = header.format(payload_len as u64, &mut &mut bytes[..]);
        Header { bytes, len }
    }

    fn none() -> Header {
        Header {
            bytes: [0; MAX_HEADER],
            len: 0,
        }
    }

    fn of(wire: &Wire) -> Header {
        match wire {
            Wire::Binary(payload) => Header::binary(payload.len()),
            Wire::Framed(_) => Header::none(),
        }
    }
}

/// A server ping with an empty payload.
pub(crate) fn ping() -> Bytes {
    frame_bytes(Frame::ping(Bytes::new()))
}

/// A close frame with `code` and `reason`.
pub(crate) fn close(code: u16, reason: &'static str) -> Bytes {
    frame_bytes(Frame::close(Some(CloseFrame {
        code: code.into(),
        reason: reason.into(),
    })))
}

fn frame_bytes(frame: Frame) -> Bytes {
    let mut out = Vec::with_capacity(frame.len());
    // Writing into a Vec cannot fail.
    let _ = frame.format(&mut out);
    Bytes::from(out)
}

/// How far a non-blocking batch write got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Frames written whole, from the start of the batch.
    pub done: usize,
    /// The unsent rest of frame `done`, when the write stopped inside it.
    pub rest: Option<Wire>,
}

/// The write half of a fan's connection.
pub struct Socket {
    io: Io,
    /// Whether `io` writes several slices at once (a TCP socket does); if
    /// not, slices are joined first so a header never goes out alone.
    vectored: bool,
    /// The last write stopped inside a frame: until its rest goes out,
    /// nothing else may (a close frame would land inside the frame).
    mid_frame: bool,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.io {
            Io::Tcp(_) => "tcp",
            Io::Other(_) => "other",
        };
        f.debug_struct("Socket").field("io", &kind).finish()
    }
}

enum Io {
    /// A TCP stream's write half: non-blocking writes need no waker.
    Tcp(OwnedWriteHalf),
    /// Anything else (tests, or a connection hyper could not unwrap).
    Other(Pin<Box<dyn AsyncWrite + Send>>),
}

impl Io {
    fn pin(&mut self) -> Pin<&mut (dyn AsyncWrite + Send)> {
        match self {
            Io::Tcp(half) => {
                let half: Pin<&mut OwnedWriteHalf> = Pin::new(half);
                half
            }
            Io::Other(io) => io.as_mut(),
        }
    }
}

impl Socket {
    /// Wraps the write half of a connection.
    pub fn new(io: impl AsyncWrite + Send + 'static) -> Socket {
        let vectored = io.is_write_vectored();
        Socket {
            io: Io::Other(Box::pin(io)),
            vectored,
            mid_frame: false,
        }
    }

    /// Wraps a TCP stream's write half.
    pub fn tcp(half: OwnedWriteHalf) -> Socket {
        Socket {
            io: Io::Tcp(half),
            vectored: true,
            mid_frame: false,
        }
    }

    /// Whether frames go out with vectored writes (else joined first).
    pub fn is_vectored(&self) -> bool {
        self.vectored
    }

    /// Whether the bytes written so far stop inside a frame: a write was cut
    /// short (its rest is queued somewhere, or was lost with a cancelled
    /// write). Only that rest may follow; anything else corrupts the stream.
    pub fn is_mid_frame(&self) -> bool {
        self.mid_frame
    }

    /// One write attempt of `slices` (joined first when not vectored).
    fn poll_write_slices(
        &mut self,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.vectored || slices.len() < 2 {
            return self.io.pin().poll_write_vectored(cx, slices);
        }
        let mut joined = Vec::with_capacity(slices.iter().map(|s| s.len()).sum());
        for slice in slices {
            joined.extend_from_slice(slice);
        }
        self.io.pin().poll_write(cx, &joined)
    }

    /// One non-blocking vectored write of the first frames of `batch` (up
    /// to 32): reports how many went out whole and the rest of the one cut
    /// short, if any. The caller queues what is left.
    ///
    /// A socket that would block registers no waker of interest here: the
    /// writer task's next [`Socket::write_all`] registers its own. On a TCP
    /// stream this is a plain `writev`, outside tokio's cooperative budget.
    pub fn try_write_batch<T: AsRef<Wire>>(&mut self, batch: &[T]) -> io::Result<Written> {
        const MAX: usize = SLICES_PER_WRITE / 2;
        let batch = &batch[..batch.len().min(MAX)];
        let mut headers = [Header::none(); MAX];
        for (header, wire) in headers.iter_mut().zip(batch) {
            *header = Header::of(wire.as_ref());
        }
        let mut slices = [IoSlice::new(&[]); SLICES_PER_WRITE];
        let mut used = 0;
        let mut total = 0;
        for (header, wire) in headers.iter().zip(batch) {
            let bytes = wire.as_ref().bytes();
            if header.len > 0 {
                slices[used] = IoSlice::new(&header.bytes[..header.len]);
                used += 1;
            }
            slices[used] = IoSlice::new(bytes);
            used += 1;
            total += header.len + bytes.len();
        }
        let slices = &slices[..used];
        let attempt = match &self.io {
            Io::Tcp(half) => Poll::Ready(half.try_write_vectored(slices)),
            Io::Other(_) => self.poll_write_slices(&mut Context::from_waker(Waker::noop()), slices),
        };
        let n = match attempt {
            Poll::Ready(Ok(0)) if total > 0 => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => 0,
        };
        // Walk the frames to find where the write stopped.
        let mut left = n;
        for (i, wire) in batch.iter().enumerate() {
            let len = wire.as_ref().wire_len();
            if left < len {
                let rest = (left > 0).then(|| wire.as_ref().rest(left));
                if n > 0 {
                    self.mid_frame = rest.is_some();
                }
                return Ok(Written { done: i, rest });
            }
            left -= len;
        }
        if n > 0 {
            self.mid_frame = false;
        }
        Ok(Written {
            done: batch.len(),
            rest: None,
        })
    }

    /// Writes every item of `batch`, in order, waiting for the socket as
    /// needed; up to 32 frames per vectored write.
    pub async fn write_all<T: AsRef<Wire>>(&mut self, batch: &[T]) -> io::Result<()> {
        for chunk in batch.chunks(SLICES_PER_WRITE / 2) {
            let headers: Vec<Header> = chunk.iter().map(|w| Header::of(w.as_ref())).collect();
            let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(chunk.len() * 2);
            let mut ends = Vec::with_capacity(chunk.len());
            let mut end = 0;
            for (header, wire) in headers.iter().zip(chunk) {
                if header.len > 0 {
                    slices.push(IoSlice::new(&header.bytes[..header.len]));
                }
                slices.push(IoSlice::new(wire.as_ref().bytes()));
                end += header.len + wire.as_ref().bytes().len();
                ends.push(end);
            }
            self.write_slices(&mut slices, &ends).await?;
        }
        poll_fn(|cx| self.io.pin().poll_flush(cx)).await
    }

    /// Writes every byte of `slices`, whose frames end at byte offsets
    /// `ends`; keeps [`Socket::is_mid_frame`] true to the bytes written, also
    /// if this future is dropped half-way.
    async fn write_slices(
        &mut self,
        mut slices: &mut [IoSlice<'_>],
        ends: &[usize],
    ) -> io::Result<()> {
        let mut written = 0;
        while !slices.is_empty() {
            let n = poll_fn(|cx| self.poll_write_slices(cx, slices)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            written += n;
            self.mid_frame = ends.binary_search(&written).is_err();
            IoSlice::advance_slices(&mut slices, n);
        }
        Ok(())
    }

    /// Shuts the write direction down (TCP FIN after the close frame).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.io.pin().poll_shutdown(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    fn binary_frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Frame::message(payload.to_vec(), OpCode::Data(Data::Binary), true)
            .format(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn headers_match_tungstenite_for_every_length_class() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload = vec![7u8; len];
            let expected = binary_frame(&payload);
            let header = Header::binary(len);
            assert_eq!(
                &expected[..header.len],
                &header.bytes[..header.len],
                "len {len}"
            );
            assert_eq!(
                Wire::Binary(Bytes::from(payload)).wire_len(),
                expected.len()
            );
        }
    }

    #[test]
    fn the_rest_after_any_cut_completes_the_frame() {
        let payload = Bytes::from(vec![1u8; 300]);
        let whole = binary_frame(&payload);
        let wire = Wire::Binary(payload);
        for cut in [0, 1, 3, 4, 5, 200, 303] {
            let rest = wire.rest(cut);
            let mut joined = whole[..cut].to_vec();
            joined.extend_from_slice(rest.bytes());
            assert_eq!(joined, whole, "cut at {cut}");
        }
    }

    #[tokio::test]
    async fn writes_a_batch_that_decodes_back() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut socket = Socket::new(server);
        let batch = vec![
            Wire::Binary(Bytes::from_static(b"one")),
            Wire::Framed(ping()),
            Wire::Binary(Bytes::from(vec![9u8; 1000])),
        ];
        socket.write_all(&batch).await.unwrap();
        assert_eq!(
            socket.try_write_batch(&batch[..1]).unwrap(),
            Written {
                done: 1,
                rest: None
            }
        );
        drop(socket);
        let mut got = Vec::new();
        let mut client = client;
        client.read_to_end(&mut got).await.unwrap();
        let mut expected = binary_frame(b"one");
        expected.extend_from_slice(&ping());
        expected.extend_from_slice(&binary_frame(&[9u8; 1000]));
        expected.extend_from_slice(&binary_frame(b"one"));
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn a_full_socket_hands_back_the_unsent_rest() {
        // A pipe holding 16 bytes takes the header and part of the payload.
        let (mut client, server) = tokio::io::duplex(16);
        let mut socket = Socket::new(server);
        let wire = Wire::Binary(Bytes::from(vec![5u8; 40]));
        let Written {
            done: 0,
            rest: Some(rest),
        } = socket.try_write_batch(&[wire]).unwrap()
        else {
            panic!("a 16-byte pipe cannot take a 42-byte frame");
        };
        assert_eq!(
            socket.try_write_batch(std::slice::from_ref(&rest)).unwrap(),
            Written {
                done: 0,
                rest: None
            },
            "a full pipe takes nothing more"
        );
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 42];
            client.read_exact(&mut got).await.unwrap();
            got
        });
        socket.write_all(&[rest]).await.unwrap();
        assert_eq!(reader.await.unwrap(), binary_frame(&[5u8; 40]));
    }

    #[test]
    fn control_frames_are_well_formed() {
        assert_eq!(&ping()[..], &[0x89, 0x00]);
        let close = close(1008, "slow consumer");
        assert_eq!(close[0], 0x88);
        assert_eq!(usize::from(close[1]), 2 + "slow consumer".len());
        assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1008);
    }

    #[tokio::test]
    async fn a_tcp_socket_writes_without_blocking_until_full_then_finishes_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (_read, write) = server.into_split();
        let mut socket = Socket::tcp(write);
        assert!(socket.is_vectored());
        let frame = Wire::Binary(Bytes::from(vec![3u8; 60_000]));
        // The client does not read: the kernel buffers fill, and a write
        // is finally cut short instead of waiting.
        let mut done = 0usize;
        let rest = loop {
            match socket
                .try_write_batch(std::slice::from_ref(&frame))
                .unwrap()
            {
                Written { done: 1, .. } => done += 1,
                Written { rest, .. } => break rest.unwrap_or_else(|| frame.clone()),
            }
            assert!(done < 10_000, "a socket nobody reads never filled up");
        };
        let expected = (done + 1) * frame.wire_len();
        let reader = tokio::spawn(async move {
            let mut client = client;
            let mut got = vec![0u8; expected];
            client.read_exact(&mut got).await.unwrap();
            got
        });
        socket.write_all(&[rest]).await.unwrap();
        let got = reader.await.unwrap();
        let one = binary_frame(&[3u8; 60_000]);
        for (i, chunk) in got.chunks(one.len()).enumerate() {
            assert!(chunk == one.as_slice(), "frame {i} arrived intact");
        }
    }
}
