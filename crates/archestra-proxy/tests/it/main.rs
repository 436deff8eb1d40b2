//! Integration tests of `archestra-proxy` against real listeners on 127.0.0.1, port 0.

// Shared helpers: servers on temporary databases, minting, redeeming.
mod common;
// A mock Anthropic upstream that records what it received.
mod upstream;
// The binary as a child process.
mod process;

// The binary: serve, signals, captured output, `setups create`, `keys`.
mod binary;
// `POST /api/connection-setups` behind the admin token.
mod minting;
// `GET /v1/health`.
mod health;
// Redemption: payload, single use, concurrency, expiry, rate limit, restarts, faults.
mod redeem;
// Stopping: requests in flight and the grace period.
mod lifecycle;
// `DELETE /api/virtual-keys/self`.
mod self_revoke;
// The data plane: forwarding, streaming, keys, usage rows, failures.
mod data_plane;
// Browser approval: `POST /api/client-connections`, polling, and `archestra-proxy approve`.
mod connect;
// Abuse: slow and oversized clients, many connections, a restart under load.
mod abuse;
// SIGTERM under load: usage rows kept, tokens redeemed at most once across a restart.
mod restart;
// The skills marketplace over git smart HTTP: clones, credentials, refusals.
mod skills;
