//! Which validator identity (or Tezos baker's signer identity) a command
//! is about.

use std::path::Path;

use slashguard::{NodeId, NodeKeypair};

use crate::args::NodeArgs;
use crate::exit::Failure;

/// The node named by --node or --keypair.
pub fn node_id(args: &NodeArgs) -> Result<NodeId, Failure> {
    match (&args.node, &args.keypair, &args.baker) {
        (Some(n), _, _) => n.parse().map_err(|e: slashguard::Error| {
            Failure::bad_input(e.to_string())
                .hint("give the identity's base58 public key, or --keypair FILE")
        }),
        (None, Some(path), _) => Ok(keypair(path)?.node_id()),
        (None, None, Some(name)) => Ok(NodeId::tezos_baker(name)),
        (None, None, None) => Err(Failure::bad_input("give --node, --keypair or --baker")),
    }
}

/// Read a Solana keypair file. The secret never reaches the output.
pub fn keypair(path: &Path) -> Result<NodeKeypair, Failure> {
    NodeKeypair::read_solana_json(path)
        .map_err(|e| Failure::from(e).hint("give the identity keypair file (a JSON array of 64 numbers, as solana-keygen writes it)"))
}
