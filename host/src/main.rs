//! The `wasmtrigger` command line: parses arguments, sets up logging and the
//! async runtime, and hands each command to its handler in [`cli`].

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::args::{Cli, Command, LogFormatArg};
use wasmtrigger::logging::{self, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match cli.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    };
    let quiet = matches!(cli.command, Command::Test(_));
    let level = cli
        .log_level
        .as_deref()
        .unwrap_or(if quiet { "error" } else { "info" });
    if let Err(e) = logging::init(format, level) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => cli::run::run(*args).await,
            Command::Check(args) => cli::offline::check(args).await,
            Command::Invoke(args) => cli::offline::invoke(args).await,
            Command::Modules(args) => cli::offline::modules(args).await,
            Command::Runs(args) => cli::remote::runs(args).await,
            Command::Triggers(args) => cli::remote::triggers(args).await,
            Command::Fire(args) => cli::remote::fire(args).await,
            Command::Replay(args) => cli::replay::replay(args).await,
            Command::Redrive(args) => cli::replay::redrive(args).await,
            Command::Test(args) => cli::module_test::test(args).await,
            Command::Shadow(args) => cli::replay::shadow(args).await,
            Command::New(args) => cli::offline::new_project(args),
            Command::Enqueue(args) => cli::remote::enqueue(args).await,
            Command::Rbac(args) => cli::offline::rbac(args),
            Command::Crd => {
                print!("{}", wasmtrigger::kube::crd::crd_yaml());
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<cli::BadInput>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
