//! A control-protocol client.

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::proto::{self, ErrorBody, Op, Outcome, Reply, Request, VERSION};

/// Why a call did not get a reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server is not there or the socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The reply could not be read.
    #[error("bad reply from vnetd: {0}")]
    Reply(String),
}

/// A connection to vnetd.
pub struct Client {
    rd: BufReader<UnixStream>,
    wr: UnixStream,
    next: u64,
}

impl Client {
    /// Connects to the socket at `path`.
    ///
    /// # Errors
    /// The connect error.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let s = UnixStream::connect(path)?;
        Ok(Client {
            rd: BufReader::new(s.try_clone()?),
            wr: s,
            next: 1,
        })
    }

    /// Sends a request whose reply is followed by a stream (a capture), and
    /// hands back the stream after a successful reply.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn call_then_stream(
        mut self,
        op: Op,
    ) -> Result<Result<BufReader<UnixStream>, ErrorBody>, ClientError> {
        Ok(self.call(op)?.map(|_| self.rd))
    }

    /// Sends one request and waits for its reply.
    ///
    /// # Errors
    /// Transport failures; an error the server reports is `Ok(Err(..))`.
    pub fn call(&mut self, op: Op) -> Result<Result<serde_json::Value, ErrorBody>, ClientError> {
        let id = self.next;
        self.next += 1;
        let req = Request { v: VERSION, id, op };
        let body = serde_json::to_vec(&req).map_err(|e| ClientError::Reply(e.to_string()))?;
        proto::write_frame(&mut self.wr, &body)?;
        self.wr.flush()?;
        let frame = proto::read_frame_max(&mut self.rd, proto::MAX_REPLY)
            .map_err(|e| ClientError::Reply(e.to_string()))?;
        let reply: Reply =
            serde_json::from_slice(&frame).map_err(|e| ClientError::Reply(e.to_string()))?;
        // Id 0 is the server speaking before reading our request (busy).
        if reply.id == 0
            && let Outcome::Error(e) = reply.outcome
        {
            return Ok(Err(e));
        }
        if reply.id != id {
            return Err(ClientError::Reply(format!(
                "reply {} to request {id}",
                reply.id
            )));
        }
        Ok(match reply.outcome {
            Outcome::Ok(v) => Ok(v),
            Outcome::Error(e) => Err(e),
        })
    }
}
