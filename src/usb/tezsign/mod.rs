//! TezSign: frames, protobuf messages and the request/response client.

mod client;
pub mod frame;
pub mod proto;

pub use client::{
    map_error, parse_readiness, status_marks, Readiness, TezSignClient, PROTOCOL_VERSION,
    READY_MAGIC, READY_REQUEST, READY_REQUEST_TYPE,
};
pub use frame::{Frame, FrameError, FrameStream, FrameType, MessageId};
