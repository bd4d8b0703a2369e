//! Where the daemon's messages go: the journal, with fields such as FARM= and BACKEND= (when
//! systemd runs it, or NFTLBD_LOG=journal), else standard error as `nftlbd: message key=value`.

use tracing_subscriber::prelude::*;

pub fn init() {
    // Ours from info up; the libraries' (zbus, tokio) only when they warn.
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target("nftlbd", tracing::Level::INFO)
        .with_default(tracing::Level::WARN);
    let journal = std::env::var_os("JOURNAL_STREAM").is_some()
        || std::env::var("NFTLBD_LOG").is_ok_and(|v| v == "journal");
    if journal && let Ok(layer) = tracing_journald::layer() {
        let layer = layer
            .with_field_prefix(None)
            .with_syslog_identifier("nftlbd".into());
        let _ = tracing_subscriber::registry()
            .with(layer.with_filter(filter))
            .try_init();
        return;
    }
    let fmt = tracing_subscriber::fmt::layer()
        .without_time()
        .with_target(false)
        .with_level(false)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .event_format(Prefixed);
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .try_init();
}

/// `nftlbd: message key=value …` (what the tests and the demo read, and the journal shows when
/// standard error goes there).
struct Prefixed;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Prefixed
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "nftlbd: ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
