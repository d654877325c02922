//! `pivotal`: one binary, one subcommand per process or task. Each process
//! runs on its own (`pivotal relay` is the relay process, and so on).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use pivotal_auth::{TokenIssuer, TokenRequest};
use pivotal_settings::Settings;
use uuid::Uuid;

/// mimalloc returns freed memory to the system promptly; with the system
/// allocator, the per-thread arenas of the many threads (tokio, librdkafka,
/// the index writer) kept the projector's peak resident memory high. Its
/// v2 line (the crate's `v2` feature) purges freed pages after 10 ms; v3,
/// the crate's default, waits a second, which let a burst of requests
/// hold the query API's peak 35 MiB higher (ADR 0035).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "pivotal", version, about = "Pivotal Flow processes and tools")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Apply database migrations and exit.
    Migrate,
    /// Run the REST command API.
    CommandApi,
    /// Run the GraphQL query API.
    QueryApi,
    /// Run the relay from the event store to Kafka.
    Relay,
    /// Run the projectors (Kafka consumer group building read models).
    Projector,
    /// Rebuild a read model beside the live one and switch to it, with a
    /// progress bar: a projection's table (from the event store), `search`
    /// (the search index) or `dashboard` (the Redis figures); `all` does
    /// every one.
    Rebuild {
        /// `customers`, `organizations`, `users`, `rate_cards`, `quotes`,
        /// `search`, `dashboard` or `all`.
        projection: String,
    },
    /// Start the system against the local services, load it over HTTP and
    /// print throughput, latency, freshness and memory beside the
    /// PostgreSQL and Kafka baselines (build with --release).
    Bench {
        /// Seconds of each load phase.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        #[arg(long, default_value_t = 256)]
        command_clients: usize,
        #[arg(long, default_value_t = 1000)]
        query_connections: usize,
        #[arg(long, default_value_t = 300)]
        freshness_samples: usize,
        /// Customer events the rebuild phase replays (the load phases'
        /// events copied under new ids).
        #[arg(long, default_value_t = 200_000)]
        rebuild_events: u64,
        /// Connections the rebuild writes each batch on.
        #[arg(long, default_value_t = pivotal_projectors::framework::RebuildLimits::default().writers)]
        rebuild_writers: usize,
        /// Leave the machine's dirty pages where they are between phases,
        /// and the database's before the rebuild (no checkpoint), to
        /// compare with the runs that write them out first.
        #[arg(long)]
        leave_dirty_pages: bool,
        /// Paced command phases after the target rate's that narrow down
        /// the highest rate met with p99 under 50 ms (at most 6; 0 runs
        /// none).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(0..=pivotal_cli::bench::MAX_RATE_SEARCH_STEPS as i64))]
        rate_search_steps: u8,
        /// The JSON report.
        #[arg(long, default_value = "target/bench/report.json")]
        out: PathBuf,
    },
    /// Load the demo organization's customers (idempotent).
    Demo,
    /// Print a development access token signed with the configured key.
    Token {
        #[arg(long, default_value_t = pivotal_cli::demo::ORGANIZATION)]
        org: Uuid,
        #[arg(long, default_value_t = pivotal_cli::demo::USER)]
        user: Uuid,
        /// Comma-separated roles: owner, admin, manager, member, accountant, auditor.
        #[arg(long, default_value = "owner")]
        roles: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
    /// Write the generated files under `schemas/`, or check them with `--check`.
    Schemas {
        #[arg(long)]
        check: bool,
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load()?;
    let service = match cli.command {
        Task::CommandApi => Some("command-api"),
        Task::QueryApi => Some("query-api"),
        Task::Relay => Some("relay"),
        Task::Projector => Some("projector"),
        _ => None,
    };
    let tracer = pivotal_telemetry::init(&settings.log, &settings.telemetry, service)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(run(cli.command, settings));
    drop(runtime);
    // After the runtime: the exporter sends what is buffered from its own thread.
    if let Some(tracer) = tracer {
        tracer.shutdown();
    }
    outcome
}

async fn run(task: Task, settings: Settings) -> anyhow::Result<()> {
    match task {
        Task::Migrate => {
            pivotal_cli::setup::database(&settings, "pivotal-migrate").await?;
            println!("migrations applied");
        }
        Task::CommandApi => {
            let pool = pivotal_command_api::connect(&settings).await?;
            let app = pivotal_command_api::Application::build(&settings, pool).await?;
            app.run(shutdown_signal()).await?;
        }
        Task::QueryApi => {
            let pool = pivotal_query_api::connect(&settings).await?;
            let app = pivotal_query_api::Application::build(&settings, pool).await?;
            app.run(shutdown_signal()).await?;
        }
        Task::Relay => {
            let pool = pivotal_cli::setup::connect(&settings, "pivotal-relay").await?;
            pivotal_telemetry::ops::serve(
                settings.relay.ops_listen,
                pool.clone(),
                Vec::new(),
                shutdown_signal(),
            )
            .await?;
            pivotal_relay::run(settings, pool, shutdown_signal()).await?;
        }
        Task::Projector => {
            let pool = pivotal_projectors::db::connect(&settings, "pivotal-projector").await?;
            let membership =
                pivotal_projectors::membership::Membership::from_settings(&settings.projector);
            let check = membership.clone();
            pivotal_telemetry::ops::serve(
                settings.projector.ops_listen,
                pool.clone(),
                vec![pivotal_telemetry::ops::Check {
                    name: "consumer_group",
                    probe: Box::new(move || {
                        let verdict = check.verdict();
                        (verdict.ready, verdict.detail)
                    }),
                }],
                shutdown_signal(),
            )
            .await?;
            pivotal_projectors::framework::run_with(settings, pool, membership, shutdown_signal())
                .await?;
        }
        Task::Rebuild { projection } => {
            let pool = pivotal_cli::setup::database(&settings, "pivotal-rebuild").await?;
            pivotal_cli::rebuild::run(&settings, &pool, &projection).await?;
        }
        Task::Bench {
            seconds,
            command_clients,
            query_connections,
            freshness_samples,
            rebuild_events,
            rebuild_writers,
            leave_dirty_pages,
            rate_search_steps,
            out,
        } => {
            let options = pivotal_cli::bench::BenchOptions {
                seconds,
                command_clients,
                query_connections,
                freshness_samples,
                rebuild_events,
                rebuild_writers,
                leave_dirty_pages,
                rate_search_steps: usize::from(rate_search_steps),
                out,
            };
            pivotal_cli::bench::run(&settings, &options).await?;
        }
        Task::Demo => {
            let pool = pivotal_cli::setup::database(&settings, "pivotal-demo").await?;
            let people = pivotal_cli::demo::load_people(&settings, &pool).await?;
            let created = pivotal_cli::demo::load(&pool).await?;
            let quotes = pivotal_cli::demo::load_quotes(&pool).await?;
            println!(
                "demo people created: {people}; customers created: {created}; quotes created: {quotes}"
            );
        }
        Task::Token {
            org,
            user,
            roles,
            ttl,
        } => {
            let issuer = TokenIssuer::from_settings(&settings.auth)?
                .ok_or_else(|| anyhow::anyhow!("no signing key configured (auth.signing_key)"))?;
            let roles: Vec<&str> = roles
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .collect();
            let request = TokenRequest::for_roles(user, org, &roles);
            println!("{}", issuer.with_ttl(ttl).mint(&request)?);
        }
        Task::Schemas { check, root } => {
            if check {
                let drifted = pivotal_cli::generated::drifted(&root);
                if !drifted.is_empty() {
                    for path in &drifted {
                        eprintln!("out of date: {}", path.display());
                    }
                    anyhow::bail!("generated files differ from the code; run `pivotal schemas`");
                }
                println!("generated files are up to date");
            } else {
                let count = pivotal_cli::generated::write(&root)?;
                println!("{count} files written");
            }
        }
    }
    Ok(())
}
