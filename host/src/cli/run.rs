//! `wasmtrigger run`: the engine until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use super::args::{EngineArgs, RunArgs};
use wasmtrigger::config::{self, EngineOverrides};
use wasmtrigger::engine::{Engine, EngineError, EngineOptions, ReloadOptions};
use wasmtrigger::kube::leader::LeaderConfig;
use wasmtrigger::kube::sync::TriggerObjects;
use wasmtrigger::runs::LogSink;
use wasmtrigger::server::ApiToken;

pub(crate) fn overrides(args: &EngineArgs) -> EngineOverrides {
    EngineOverrides {
        workers: args.workers,
        queue_size: args.queue_size,
        per_worker_qps: args.per_worker_qps,
        timeout: args.timeout,
        max_retry: args.max_retry,
        retry_delay: args.retry_delay,
        secrets_dir: args.secrets.secrets_dir.clone(),
        secrets_env_prefix: args.secrets.secrets_env_prefix.clone(),
        allow_no_triggers: false,
    }
}

/// The namespace of the pod the engine runs in, from its service account, else `default`.
fn pod_namespace(service_account_dir: &std::path::Path) -> String {
    std::fs::read_to_string(service_account_dir.join("namespace"))
        .map(|n| n.trim().to_string())
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    // Listen before anything starts, so a stop signal during start-up is
    // handled (as a graceful stop) instead of killing the process.
    let stop = stop_signal()?;
    let c = &args.config;
    let mut engine_overrides = overrides(&c.engine);
    engine_overrides.allow_no_triggers = args.trigger_objects.is_some();
    let config = match config::load(&c.config, c.modules.as_deref(), &engine_overrides) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "error: the config has {} problem(s); not starting",
                errors.0.len()
            );
            return Ok(ExitCode::from(2));
        }
    };
    for warning in config::warnings(&config.triggers, chrono::Utc::now()) {
        tracing::warn!("{warning}");
    }
    let listen: Option<std::net::SocketAddr> = match args.listen.as_str() {
        "off" | "none" | "" => None,
        addr => Some(addr.parse().with_context(|| {
            format!("--listen {addr}: expected HOST:PORT like 127.0.0.1:7070, or off")
        })?),
    };
    let api_token = match (&args.api_token, &args.api_token_file) {
        (Some(token), _) => Some(ApiToken::Value(token.clone())),
        (None, Some(file)) => Some(ApiToken::File(file.clone())),
        (None, None) => None,
    };
    if let Some(addr) = listen.filter(|a| !a.ip().is_loopback())
        && api_token.is_none()
    {
        if !args.insecure_api {
            eprintln!(
                "error: --listen {addr} is reachable from other hosts, and without an API token anyone who can connect could list triggers and runs and fire triggers.\n\
                 Give a token: --api-token-file FILE (or API_TOKEN_FILE; e.g. a mounted Secret), or --api-token / API_TOKEN;\n\
                 or listen on loopback only (--listen 127.0.0.1:7070); or, knowingly, pass --insecure-api."
            );
            return Ok(ExitCode::from(2));
        }
        tracing::warn!(
            listen = %addr,
            "--insecure-api: the API has no token on a non-loopback address; anyone who can connect controls this engine"
        );
    }
    let options = EngineOptions {
        listen,
        api_token,
        kube: wasmtrigger::kube::KubeConnection {
            kubeconfig: args.kubeconfig.clone(),
            service_account_dir: args.service_account_dir.clone(),
        },
        trigger_objects: args.trigger_objects.as_deref().map(|ns| match ns {
            "*" | "all" => TriggerObjects::All,
            "" => TriggerObjects::Namespace(pod_namespace(&args.service_account_dir)),
            ns => TriggerObjects::Namespace(ns.to_string()),
        }),
        leader: args.leader_election.clone().map(|lease| LeaderConfig {
            namespace: args
                .leader_election_namespace
                .clone()
                .unwrap_or_else(|| pod_namespace(&args.service_account_dir)),
            lease,
            identity: args
                .leader_identity
                .clone()
                .unwrap_or_else(LeaderConfig::default_identity),
            lease_duration: args.lease_duration,
            renew_deadline: args.renew_deadline,
            retry_period: args.retry_period,
        }),
        state_dir: args.state_dir.clone(),
        module_cache: (!args.no_module_cache).then(|| args.state_dir.join("cache")),
        reload: (!args.no_reload).then(|| ReloadOptions {
            config_path: c.config.clone(),
            modules_dir: c.modules.clone(),
            overrides: engine_overrides.clone(),
            poll_interval: args.poll_interval,
        }),
    };
    let engine = match Engine::start(config, options, vec![Arc::new(LogSink)]).await {
        Ok(engine) => engine,
        Err(EngineError::Modules(errors)) => {
            eprintln!("{errors}");
            eprintln!("error: {} module problem(s); not starting", errors.0.len());
            return Ok(ExitCode::from(2));
        }
        Err(EngineError::Config(errors)) => {
            eprintln!("{errors}");
            eprintln!(
                "error: the config has {} problem(s); not starting",
                errors.0.len()
            );
            return Ok(ExitCode::from(2));
        }
        Err(EngineError::ApiToken(why)) => {
            eprintln!("error: {why}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e).context("cannot start the engine"),
    };
    stop.await;
    engine.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Registers SIGINT and SIGTERM handlers now; the future resolves on either.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
