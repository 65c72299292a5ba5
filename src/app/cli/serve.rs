//! `redrive serve`: the HTTP API as a process of its own, until SIGTERM or SIGINT; and
//! `redrive serve token`, which makes a token for `[[serve.tokens]]`.

use clap::{Args, Subcommand};

use crate::app::serve;
use crate::app::serve::auth::{new_token, token_hash};
use crate::app::serve::config::RawToken;
use crate::app::settings::{self, AppRaw};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;
use crate::telemetry::Health;

/// `redrive serve` flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Make a token instead of serving.
    #[command(subcommand)]
    pub action: Option<ServeAction>,
    /// Overrides serve.listen.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

/// `redrive serve …`
#[derive(Debug, Subcommand)]
pub enum ServeAction {
    /// Make a new random token: prints it once, and the [[serve.tokens]] entry (with its hash)
    /// to add to the config file.
    Token(TokenArgs),
}

/// `redrive serve token` flags.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Who holds it; the audit trail names it as the operator of its changes.
    #[arg(long)]
    pub name: String,
    /// viewer, operator or admin.
    #[arg(long, default_value = "viewer")]
    pub role: String,
    /// A tenant it may see (repeatable; default every tenant).
    #[arg(long = "tenant", value_name = "TENANT")]
    pub tenants: Vec<String>,
    /// Let a viewer see payloads and outputs.
    #[arg(long)]
    pub see_payloads: bool,
}

/// Runs `redrive serve [token]`.
pub async fn run(args: ServeArgs, mut raw: AppRaw) -> Result<()> {
    if let Some(ServeAction::Token(t)) = args.action {
        return token(t);
    }
    if let Some(l) = args.listen {
        raw.serve.listen = l;
    }
    let (settings, app) = settings::validate(raw)?;
    settings::install_logging(&settings);
    let telemetry = settings.telemetry();
    telemetry.install_metrics()?;
    let broker = Broker::connect(&settings).await?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    // /metrics (with the API's request counts), /healthz and /readyz, when metrics.listen is
    // set; ready while the process serves.
    let health = std::sync::Arc::new(Health::new(settings.metrics.stall_after));
    health.set_serving(true);
    telemetry.serve_metrics(health, shutdown.clone()).await?;
    let server = serve::start(&settings, &app.serve, broker, shutdown.clone()).await?;
    shutdown.wait().await;
    server.stopped(settings.fleet.shutdown_grace).await;
    Ok(())
}

/// Prints a new token once, and its `[[serve.tokens]]` entry.
fn token(a: TokenArgs) -> Result<()> {
    let token = new_token()?;
    let entry = RawToken {
        name: a.name,
        role: a.role,
        tenants: if a.tenants.is_empty() {
            vec!["*".into()]
        } else {
            a.tenants
        },
        sha256: token_hash(&token),
        see_payloads: a.see_payloads,
    };
    // The same checks as the config file's, so the entry printed loads.
    serve::config::check_token(&entry).map_err(|e| {
        Error::Usage(
            e.replace("serve.tokens[0].tenants", "--tenant")
                .replace("serve.tokens[0].", "--"),
        )
    })?;
    #[derive(serde::Serialize)]
    struct Snippet<'a> {
        serve: Tokens<'a>,
    }
    #[derive(serde::Serialize)]
    struct Tokens<'a> {
        tokens: [&'a RawToken; 1],
    }
    let toml = toml::to_string(&Snippet {
        serve: Tokens { tokens: [&entry] },
    })
    .map_err(|e| Error::Usage(format!("cannot render the entry: {e}")))?;
    eprintln!(
        "the token, shown this once (only its hash is kept; send it as `Authorization: Bearer <token>`):"
    );
    println!("{token}");
    eprintln!("\nadd this entry to the config file:");
    println!("\n{toml}");
    Ok(())
}
