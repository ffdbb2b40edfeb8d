use std::path::PathBuf;

use clap::Subcommand;
use runledger_ledger::sign;

use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a new Ed25519 key pair for signed exports: FILE (the secret, mode 0600) and
    /// FILE.pub (the public key auditors pass to `verify --key`). Never overwrites a key.
    Generate {
        /// Where to write the secret key; the public key goes to FILE.pub.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: PathBuf,
    },
}

pub fn run(command: KeysCommand) -> Result<(), Failure> {
    match command {
        KeysCommand::Generate { output } => {
            let pair = sign::generate().map_err(Failure::from)?;
            let public_path = sign::write_key_pair(&output, &pair).map_err(Failure::from)?;
            outln!(
                "public key {} written to {}",
                sign::hex(pair.public.as_bytes()),
                public_path.display()
            );
            outln!(
                "secret key written to {} (keep it out of the ledger host's reach)",
                output.display()
            );
            Ok(())
        }
    }
}
