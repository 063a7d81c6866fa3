//! The one mapping from our errors to gRPC status codes.

use tonic::Status;

use crate::fleet::FleetStopped;

impl From<FleetStopped> for Status {
    fn from(_: FleetStopped) -> Self {
        Status::unavailable("the server is shutting down")
    }
}
