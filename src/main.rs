//! The `scorehub` command: parse the command line, load the config, start
//! logging, then serve the hub, mint a token, or run an operator's command
//! (`check`, `log verify`, `games list`: [`scorehub::ops`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use scorehub::auth::{Auth, Scope};
use scorehub::config::{Config, ShutdownBudget};
use scorehub::ops;
use scorehub::server::{Hub, shutdown_signal};
use tokio::net::TcpListener;

/// A real-time live-score hub: scorekeepers post events over HTTP, fans watch over WebSocket.
#[derive(Debug, Parser)]
#[command(name = "scorehub", version, about, long_about = None)]
struct Cli {
    /// Config file (TOML); see config/default.toml for every key.
    #[arg(long, global = true, env = "SCOREHUB_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub (the default). Without redis.url it runs alone on an embedded event log.
    Serve,
    /// Print a signed token (HS256 JWT) made with the configured auth.secret.
    Token(TokenArgs),
    /// Check the config file and environment, and storage.dir, without starting.
    ///
    /// Loads and validates the config exactly as `serve` does (unknown keys,
    /// wrong types, short secrets, bad durations, the log filter) and, in
    /// single-node mode, checks that storage.dir is a writable directory (or
    /// can be created) whose event log, if any, has the log's header. Redis
    /// is not contacted. Prints one summary line and exits 0, or prints the
    /// line `serve` would stop with, naming the key, and exits 2.
    Check,
    /// Inspect the embedded event log (single-node mode).
    #[command(subcommand)]
    Log(LogCommand),
    /// Inspect the games the hub holds.
    #[command(subcommand)]
    Games(GamesCommand),
}

#[derive(Debug, Subcommand)]
enum LogCommand {
    /// Check storage.dir's events.log and its index, read-only.
    ///
    /// Reads every record (length, checksum, decoding, each game's seqs,
    /// the fold into a valid game state) and compares every game's index
    /// file with the log, reporting each problem with its byte offset. Never
    /// writes, holds a lock or repairs anything. Meant for a stopped hub's log or a
    /// copy of it: beside a running hub, the group being written may show as
    /// a torn tail. Exits 0 when clean (printing records and games counted),
    /// 1 when problems were found, 2 for bad usage or config or no log.
    Verify(DirArgs),
}

#[derive(Debug, Subcommand)]
enum GamesCommand {
    /// List every game: id, league, status, seq and score.
    ///
    /// Single node (no redis.url), or with --dir: from the event log,
    /// read-only (games past games.retention are marked expired: the hub no
    /// longer serves them). Cluster mode: from Redis, like GET /v1/games.
    /// Exits 0; 1 when the log has problems (the list is still printed, the
    /// problems go to stderr) or Redis cannot be reached; 2 for bad usage
    /// or config or no log.
    List(ListArgs),
}

#[derive(Debug, Args)]
struct DirArgs {
    /// Storage directory to read instead of storage.dir (e.g. a backup copy).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Print one JSON array of {id, league, status, seq, home, away, expired}.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// Who the token is for (the `sub` claim, shown in the audit trail).
    #[arg(long)]
    sub: String,
    /// Games it may write: comma-separated ids or `league:*` patterns (`*` = all).
    #[arg(long, value_delimiter = ',', required = true)]
    games: Vec<String>,
    /// How long it stays valid, e.g. `8h`, `30m`, `7d`.
    #[arg(long, default_value = "8h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// What it may do.
    #[arg(long, value_enum, default_value_t = ScopeArg::Scorekeeper)]
    scope: ScopeArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ScopeArg {
    Scorekeeper,
    Admin,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("scorehub: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Token(args) => token(&config, args),
        Command::Check => operate(|out, err| ops::check(&config, cli.config.as_deref(), out, err)),
        Command::Log(LogCommand::Verify(args)) => {
            let dir = args.dir.as_deref().unwrap_or(&config.storage.dir);
            operate(|out, err| ops::verify_log(dir, out, err))
        }
        Command::Games(GamesCommand::List(args)) => operate(|out, err| {
            ops::list_games(&config, args.dir.dir.as_deref(), args.json, out, err)
        }),
        Command::Serve => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("scorehub: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(serve(config))
        }
    }
}

/// Runs an operator's command on stdout and stderr (locked for it only, so
/// never while serving), and exits with its status.
fn operate(
    command: impl FnOnce(&mut dyn std::io::Write, &mut dyn std::io::Write) -> ops::Exit,
) -> ExitCode {
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let exit = command(&mut out, &mut err);
    ExitCode::from(exit.code())
}

fn token(config: &Config, args: TokenArgs) -> ExitCode {
    let Some(secret) = &config.auth.secret else {
        eprintln!(
            "scorehub: no secret configured: set auth.secret in the config file or SCOREHUB_AUTH__SECRET \
             (at least 32 bytes, e.g. `openssl rand -hex 32`) to the same value the hub uses"
        );
        return ExitCode::from(2);
    };
    let scope = match args.scope {
        ScopeArg::Scorekeeper => Scope::Scorekeeper,
        ScopeArg::Admin => Scope::Admin,
    };
    match Auth::new(secret.as_bytes()).mint(&args.sub, scope, args.games, args.ttl) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("scorehub: {e}");
            ExitCode::from(2)
        }
    }
}

async fn serve(config: Config) -> ExitCode {
    // Caught from here on: a SIGTERM during start-up drains once serving.
    let stop = shutdown_signal();
    if let Err(e) = scorehub::telemetry::init_logging(config.log.format, &config.log.level) {
        eprintln!("scorehub: {e}");
        return ExitCode::from(2);
    }
    let (secret, generated) = match &config.auth.secret {
        Some(s) => (s.clone(), false),
        None => {
            tracing::warn!(
                "auth.secret is not set: generated a random secret for this run; tokens die with the process. \
                 Set SCOREHUB_AUTH__SECRET (e.g. `openssl rand -hex 32`) to keep them"
            );
            (Auth::generate_secret(), true)
        }
    };
    let listen = config.http.listen;
    let hub = match Hub::start(config, secret.as_bytes()).await {
        Ok(hub) => hub,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            eprintln!("scorehub: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "scorehub: cannot listen on {listen}: {e} (set http.listen / SCOREHUB_HTTP__LISTEN, `127.0.0.1:0` picks a free port)"
            );
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("scorehub: cannot read the listening address: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!("listening addr={addr}");
    if generated {
        match hub.state().auth.mint(
            "admin",
            Scope::Admin,
            vec!["*".into()],
            Duration::from_secs(24 * 3600),
        ) {
            Ok(token) => println!(
                "\nscorehub is running ({mode})\n\
                 \x20 API:        http://{addr}/v1/games\n\
                 \x20 WebSocket:  ws://{addr}/v1/ws\n\
                 \x20 Scoreboard: http://{addr}/\n\
                 \x20 Console:    http://{addr}/console\n\
                 \x20 Admin token (valid 24h or until this process stops):\n\n{token}\n",
                mode = match hub.state().config.redis.shared() {
                    true => "cluster mode, through Redis".to_string(),
                    false => format!(
                        "single node, event log in {}",
                        hub.state().config.storage.dir.display()
                    ),
                }
            ),
            Err(e) => tracing::error!("cannot mint the admin token: {e}"),
        }
    }

    // Serve until SIGTERM/Ctrl-C, then drain; exit within ShutdownBudget::TOTAL.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        stop.await;
        let _ = stop_tx.send(());
    };
    let server = tokio::spawn(hub.serve(listener, signal));
    let watchdog = async {
        if stop_rx.await.is_ok() {
            tokio::time::sleep(ShutdownBudget::WATCHDOG).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        res = server => match res {
            Ok(Ok(())) => ExitCode::SUCCESS,
            Ok(Err(e)) => {
                tracing::error!("server error: {e}");
                ExitCode::FAILURE
            }
            Err(e) => {
                tracing::error!("server task failed: {e}");
                ExitCode::FAILURE
            }
        },
        () = watchdog => {
            tracing::warn!("shutdown took too long; exiting with connections still open");
            ExitCode::SUCCESS
        }
    }
}
