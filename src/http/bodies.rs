//! The bodies around every request and response of a connection: a request
//! body must arrive whole by a deadline ([`DeadlineBody`],
//! `http.body_timeout`), and a response tells the connection's
//! [`Activity`] when it ends ([`InFlightBody`]), so the connection counts
//! as idle from then on.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::net::Activity;

/// Errors of a request body, boxed as hyper and axum pass them on.
type BoxError = Box<dyn StdError + Send + Sync>;

/// The request body did not arrive whole within `http.body_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the request body did not arrive within {} of its head (http.body_timeout)",
    humantime::format_duration(*after)
)]
pub(crate) struct BodyTimeout {
    /// The timeout.
    pub(crate) after: Duration,
}

/// The [`BodyTimeout`] `err` is, or wraps (axum and hyper box body errors
/// again), if any.
pub(crate) fn timed_out(err: &(dyn StdError + 'static)) -> Option<BodyTimeout> {
    let mut at = Some(err);
    while let Some(e) = at {
        if let Some(timeout) = e.downcast_ref::<BodyTimeout>() {
            return Some(*timeout);
        }
        at = e.source();
    }
    None
}

/// A request body that fails with [`BodyTimeout`] when it is still
/// incomplete at its deadline. The timer is made only when the body has to
/// be waited for: a body already in hyper's buffer costs none.
pub(crate) struct DeadlineBody<B> {
    inner: B,
    deadline: Instant,
    after: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<B> DeadlineBody<B> {
    /// `inner`, to arrive whole within `after` from now.
    pub(crate) fn new(inner: B, after: Duration) -> DeadlineBody<B> {
        DeadlineBody {
            inner,
            deadline: Instant::now() + after,
            after,
            sleep: None,
        }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(Box::new(BodyTimeout { after: this.after }))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One request in flight on a connection, from the router getting it until
/// its response ends; dropping it ends the request.
pub(crate) struct InFlight(Arc<Activity>);

impl InFlight {
    /// A request of `activity`'s connection starts.
    pub(crate) fn begin(activity: Arc<Activity>) -> InFlight {
        activity.begin_request();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// A response body holding its request's [`InFlight`] until its last frame
/// (or until hyper drops it, e.g. when the body is empty or the client left).
pub(crate) struct InFlightBody<B> {
    inner: B,
    request: Option<InFlight>,
}

impl<B> InFlightBody<B> {
    /// `inner`, ending `request` with it.
    pub(crate) fn new(inner: B, request: InFlight) -> InFlightBody<B> {
        InFlightBody {
            inner,
            request: Some(request),
        }
    }
}

impl<B> Body for InFlightBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Pending => false,
        };
        if ended {
            this.request = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    /// A body that never yields.
    struct Stalled;

    impl Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_with_a_body_timeout_at_its_deadline() {
        let started = Instant::now();
        let body = DeadlineBody::new(Stalled, Duration::from_secs(30));
        let Err(err) = body.collect().await else {
            panic!("a stalled body must time out");
        };
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(
            timed_out(err.as_ref()),
            Some(BodyTimeout {
                after: Duration::from_secs(30)
            }),
            "{err}"
        );
        assert!(err.to_string().contains("http.body_timeout"), "{err}");
        // Also when wrapped again, as axum does.
        let wrapped = axum::Error::new(err);
        assert!(timed_out(&wrapped).is_some());
        assert_eq!(timed_out(&std::io::Error::other("x")), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_already_there_needs_no_timer() {
        let body = DeadlineBody::new(
            http_body_util::Full::new(Bytes::from_static(b"{}")),
            Duration::from_secs(1),
        );
        let bytes = body.collect().await.expect("read").to_bytes();
        assert_eq!(&bytes[..], b"{}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_ends_its_request_at_its_last_frame() {
        let activity = Arc::new(Activity::new(Instant::now()));
        let body = InFlightBody::new(
            http_body_util::Full::new(Bytes::from_static(b"hello")),
            InFlight::begin(activity.clone()),
        );
        assert!(activity.in_flight());
        let mut body = body;
        let frame = body.frame().await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().ok().as_deref(), Some(&b"hello"[..]));
        assert!(
            !activity.in_flight(),
            "ended with the last frame, before drop"
        );
        drop(body);
        assert!(!activity.in_flight());

        // A response dropped unread ends too.
        let body = InFlightBody::new(axum::body::Body::empty(), InFlight::begin(activity.clone()));
        assert!(activity.in_flight());
        drop(body);
        assert!(!activity.in_flight());
    }
}
