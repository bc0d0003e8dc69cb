//! `wschat-bare-relay --listen ADDR`: the bench's floor, a bare tokio-tungstenite broadcast relay.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;

/// Relays every text frame to every other client, and nothing else: the floor wschat's relay is
/// measured against by `cargo xtask bench`.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("wschat-bare-relay: cannot listen on {}: {error}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    wschat_bare_relay::serve(listener).await;
    ExitCode::SUCCESS
}
