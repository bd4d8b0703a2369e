//! docs/health.md: the `health-check` object, every key with the checks it belongs to, its
//! default and meaning, and an example. The key list is checked against the model's.

use super::GENERATED;
use super::markdown::{block, code, table};

/// Each key: name, JSON type, default, description.
pub const KEYS: &[(&str, &str, &str, &str)] = &[
    (
        "type",
        "string",
        "(required)",
        "tcp (a connection is accepted; it is closed with a reset, so it leaves no TIME_WAIT behind), http, https (http over TLS), udp, dns, exec or agent.",
    ),
    (
        "port",
        "number",
        "the backend's port, else the farm's first virtual port",
        "The port probed.",
    ),
    (
        "interval",
        "seconds",
        "2",
        "The wait between checks of a healthy backend. Fractions are allowed: 0.5.",
    ),
    (
        "fast-interval",
        "seconds",
        "interval",
        "The wait while a backend is turning: some results disagree with its health, not yet rise or fall of them.",
    ),
    (
        "down-interval",
        "seconds",
        "interval",
        "The wait between checks of a failing backend.",
    ),
    (
        "timeout",
        "seconds",
        "1",
        "A check not done by then has failed; must be below every interval. A command is killed with everything it started.",
    ),
    (
        "rise",
        "number",
        "2",
        "Successes in a row that make a failing backend healthy (1-100).",
    ),
    (
        "fall",
        "number",
        "3",
        "Failures in a row that make a healthy backend failing (1-100).",
    ),
    (
        "jitter",
        "seconds",
        "a tenth of interval",
        "Up to this much is added at random to each wait, the first one included, so thousands of checks do not fire at once; at most interval.",
    ),
    (
        "slow-start",
        "seconds",
        "0",
        "After a recovery (failing to healthy; not a first verdict, so neither at start nor for unknown to healthy) the backend's weight ramps up over this long, in steps (see Weights below); 0: its whole weight at once.",
    ),
    (
        "on-failure",
        "string",
        "stop-new",
        "stop-new: a failing backend gets no new connections; cut: its established connections are also deleted.",
    ),
    ("source-addr", "string", "none", "Probes leave from this address."),
    ("iface", "string", "none", "Probes leave through this interface."),
    (
        "mark",
        "number",
        "none",
        "Probes carry this packet mark, to follow the traffic's policy routes.",
    ),
    ("method", "string", "GET", "http, https: the request method."),
    (
        "path",
        "string",
        "(required)",
        "http, https: the request path, from /.",
    ),
    (
        "host",
        "string",
        "the backend's address and port",
        "http, https: the Host header, and for https the name the certificate must hold and the SNI sent (without a port; an address is never sent as SNI). Default for https: the backend's address, which the certificate must then hold.",
    ),
    (
        "headers",
        "object of strings",
        "none",
        "http, https: more request headers, name to value (not Host, Connection, Content-Length or Transfer-Encoding).",
    ),
    (
        "expect-status",
        "string",
        "200-399",
        "http, https: the statuses that pass, as ranges and codes: 200-299,302.",
    ),
    (
        "expect-body",
        "string",
        "none",
        "http, https: a pattern the body (its first 64 KiB) must match.",
    ),
    (
        "expect-body-absent",
        "boolean",
        "false",
        "http, https: the body must not match expect-body instead.",
    ),
    (
        "tls-verify",
        "boolean",
        "true",
        "https: the certificate chain must lead to a CA of the system's store (/etc/ssl/certs, or SSL_CERT_FILE/SSL_CERT_DIR; read when the first https check runs) and name host. false: any certificate, still TLS. A failure says what failed: tls handshake: unknown issuer, tls handshake: certificate not valid for name web.example (it names ...).",
    ),
    ("send", "string", "(required)", "udp: the datagram sent."),
    (
        "expect",
        "string",
        "any reply",
        "udp: a pattern the reply must match.",
    ),
    (
        "query-name",
        "string",
        "(required)",
        "dns: the name asked for (over UDP, recursion desired).",
    ),
    (
        "query-type",
        "string",
        "A",
        "dns: A, AAAA, NS, CNAME, SOA, PTR, MX, TXT or SRV.",
    ),
    (
        "expect-rcode",
        "string",
        "noerror",
        "dns: the response code that passes: noerror, formerr, servfail, nxdomain, notimp or refused.",
    ),
    (
        "command",
        "array of strings",
        "(required)",
        "exec: an absolute program path and its arguments; an argument HOST or PORT is replaced by the backend's address or the probed port (also in NFTLBD_HOST and NFTLBD_PORT). Exit 0 passes, as with Nagios plugins; the first line of output is the reason.",
    ),
    (
        "user",
        "string",
        "nobody",
        "exec: the unprivileged user the command runs as when nftlbd runs as root.",
    ),
    (
        "agent-port",
        "number",
        "port",
        "agent: the port the agent answers on with one line: up, ready, down, fail, stopped, maint, drain and/or a weight such as 50% (see Weights below).",
    ),
];

pub const EXAMPLE: &str = r#"{"farms": [{"name": "web", "virtual-addresses": ["192.0.2.10"], "virtual-ports": "80",
  "quorum": 2,
  "health-check": {"type": "http", "path": "/health", "interval": 1, "timeout": 0.5, "fall": 2,
                   "expect-status": "200-299", "expect-body": "\"status\":\\s*\"ok\""},
  "backends": [{"name": "a", "ip-addr": "10.0.0.1"},
               {"name": "b", "ip-addr": "10.0.0.2", "health-check": {"path": "/ready"}},
               {"name": "sorry", "ip-addr": "10.0.0.9", "sorry": true, "health-check": {"enabled": false}}]}]}
"#;

pub fn render() -> String {
    let rows: Vec<Vec<String>> = KEYS
        .iter()
        .map(|(key, json, default, doc)| vec![code(key), (*json).into(), (*default).into(), (*doc).into()])
        .collect();
    let mut out = String::from("# Health checks\n\n");
    out.push_str(GENERATED);
    out.push_str(
        "\nA farm's `health-check` says how nftlbd finds out whether each backend serves; a backend's \
         own `health-check` changes some of its keys for that backend alone. Checks set a backend's \
         `health` (unknown, healthy, failing); people set its `state` (up, drain, down, off); a check \
         never overrides a state. Times are in seconds, fractions allowed. A key that does not belong \
         to the check's type is refused, as are a timeout not below the interval and a type without \
         its required keys; errors name the field, as `farms[web].health-check.timeout`.\n\n\
         The first result decides a backend's health, so one round of checks after a start knows \
         every backend; after that it takes `fall` failures or `rise` successes in a row to turn. \
         Identical checks of the same address and port are made once and shared. The reason of a \
         turn is the last result and the count: `http 503, 3 failures`, `connection refused`.\n\n",
    );
    out.push_str(&table(&["key", "JSON", "default", "meaning"], &rows));
    out.push_str(
        "\nIn a backend's `health-check`, `\"enabled\": false` leaves the backend unchecked whatever \
         the farm's check; another `type` keeps the farm's common keys (times, counts, source) but \
         none of its type's keys; without a farm check the backend's must give its `type`.\n\n\
         Patterns (`expect-body`, `expect`) match bytes anywhere in the reply unless anchored: \
         literals, `.`, classes such as `[a-z0-9_]` and `[^...]`, `\\d \\w \\s` and their negations, \
         `^ $`, groups `(...)`, `|`, and `* + ?`. Braces are escaped (`\\{`). Matching takes time \
         linear in the reply, whatever the pattern.\n\n## Start and readiness\n\n\
         The farm key `health-start` (beside `health-check`) says what a checked backend's \
         `unknown` health means: `optimistic` (the default) schedules it as healthy; `pessimistic` \
         gives it no new connections, and counts it as down for the priority tiers, until its first \
         passing check (its established connections and persistent clients stay). Backends \
         without a check (`\"enabled\": false`, or no check at all) are never held back. \
         The read-only `HealthReady` (D-Bus `Farm` property, varlink `FarmStatus.healthReady`, \
         `nftlbctl show`) is true once every checked backend has a verdict. Health is saved with \
         the configuration and kept on restart until a check says otherwise, so a restart neither \
         makes the farm unready again nor flaps a failing backend to healthy.\n\n\
         ## Quorum and sorry backends\n\n\
         As keepalived's `quorum` and `sorry_server`: the farm key `quorum` (0, the default: off) is \
         the fewest regular backends that must take new connections (up, not failing, in an active \
         priority tier; standby tiers that came in count). A backend with `\"sorry\": true` takes no \
         new connection while the farm has its quorum; below it the sorry backends take every new \
         connection and the regular ones none, until enough pass their checks again (after `rise`) \
         and take them back. Established connections and persistent clients stay where they are. \
         A sorry backend is usually unchecked (`\"enabled\": false`); checked and failing, drained \
         or off, it takes none either. A farm below its quorum without a sorry backend able to \
         serve keeps serving with the regular backends it has (fewer are better than none): the \
         quorum is then only reported. The read-only `QuorumMet` (D-Bus `Farm` property with \
         PropertiesChanged, varlink `FarmStatus.quorumMet`, `nftlbctl show`) says whether the farm \
         has its quorum; `EffectivePriority` is 0 while the sorry backends serve. A quorum larger \
         than today's regular backends is accepted (backends come and go); past 65535, the most a \
         farm can have, it is refused. Crossing the quorum reschedules the farm; a backend's \
         change that does not cross it costs that backend alone.\n\n## Weights: agents and slow start\n\n\
         The scheduler gives a backend its effective weight in slots: `weight` × the agent's \
         percentage × the slow start's share, to the nearest whole (halves up), and never below 1 \
         while both shares are above 0 (a weight of 1 at 50 % stays 1: only 0 % takes a backend \
         out). `weight` stays what the operator set, in `GetConfig` and the state file; what the \
         checks make of it is the read-only `EffectiveWeight` (D-Bus `Backend` property, varlink \
         `BackendStatus.effectiveWeight`, `nftlbctl show` as `4 (now 2)`). Every scheduler uses \
         the slots, so every one follows it: `rr` exactly (a strict rotation over the slots), \
         `weight` at random by it, `hash` and `symhash` by it as they spread keys over the slots \
         (a change of weights moves some keys).\n\n\
         An agent check's reply is health and advice at once, each reply saying all it asks for: \
         `down`, `fail`, `stopped` and `maint` are failing; `up` and `ready` are healthy; `drain` \
         takes no new connections (the backend schedules as `drain` does and `StateChanged` says \
         up to drain, its established connections and persistent clients stay, the next priority \
         tier comes in), kept in `health-drain`; a percentage scales the weight (`health-weight`; \
         `0%` takes no new connections and brings in the next tier as a drain does). An \
         operator's `state` always wins: a drained or off backend stays so whatever its agent says. \
         Failing drops the advice.\n\n\
         With `slow-start`, a backend that recovers gets a share of its weight that goes up every \
         max(slow-start / 10, 1 s), from a small share to all of it after slow-start (30 s: 9 %, \
         18 %, … 90 %, then 100 % after 30 s; 4 s: 20 %, 40 %, 60 %, 80 %, 100 %), kept in \
         `health-ramp`. The share at recovery is committed with the verdict; each step of every \
         backend ramping is one transaction per tick. A restart goes on from the saved share; a \
         backend failing again ends its ramp. Outside checkers (`SetBackendHealth`) start none.\n\n\
         `health-drain`, `health-weight` and `health-ramp` are the checks' keys, as `health` is: \
         saved, shown by `GetConfig`, refused by `UpdateBackend`.\n\n## Example\n\n",
    );
    out.push_str(&block("json", EXAMPLE));
    out.push_str(
        "\n## Checks from outside\n\n\
         Another program may judge backends instead: `SetBackendHealth` (varlink), \
         `Backend.SetHealth` (D-Bus) or `nftlbctl set-health FARM BACKEND healthy|failing|unknown \
         REASON` set a backend's `health` and `health-reason` as a check does (polkit's \
         `org.nftlbd1.backend.set-state`). `UpdateBackend` refuses both keys. Leave such backends \
         without a `health-check`, or nftlbd's own check overrides the verdict at its next turn; \
         when a backend's check is removed its health goes back to `unknown`.\n\n\
         `examples/nagios-health.sh` runs a Nagios plugin for each backend of a farm and sends \
         the verdicts that changed: exit 0 (OK) and 1 (WARNING) are healthy, 2 (CRITICAL) \
         failing, anything else unknown; the plugin's first line is the reason. An argument \
         `HOST` or `PORT` is replaced by the backend's address or port.\n\n",
    );
    out.push_str(&block("sh", NAGIOS_EXAMPLE));
    out
}

/// How `examples/nagios-health.sh` is run (`--once` for one round, as from a timer).
pub const NAGIOS_EXAMPLE: &str = "examples/nagios-health.sh --interval 5 web a=10.0.0.1:80 b=10.0.0.2:80 \\
    -- /usr/lib/nagios/plugins/check_http -H HOST -p PORT -u /health
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ALL_TYPES, COMMON_KEYS, type_keys};
    use crate::model::{
        HealthCheck, HealthCheckOverride, validate_backend_health_check, validate_health_check,
    };

    #[test]
    fn the_page_names_exactly_the_keys_of_the_model() {
        let mut model: Vec<&str> = ["type"].into_iter().chain(COMMON_KEYS.iter().copied()).collect();
        for t in ALL_TYPES {
            model.extend(
                type_keys(t)
                    .iter()
                    .filter(|k| !model.contains(k))
                    .collect::<Vec<_>>(),
            );
        }
        let mut page: Vec<&str> = KEYS.iter().map(|k| k.0).collect();
        model.sort_unstable();
        page.sort_unstable();
        assert_eq!(page, model);
    }

    #[test]
    fn the_example_is_valid() {
        let doc: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
        let farm = &doc["farms"][0];
        let check: HealthCheck = serde_json::from_value(farm["health-check"].clone()).unwrap();
        assert_eq!(validate_health_check(&check, "farms[web].health-check"), vec![]);
        for b in farm["backends"].as_array().unwrap() {
            let own: Option<HealthCheckOverride> = b
                .get("health-check")
                .map(|v| serde_json::from_value(v.clone()).unwrap());
            let merged = validate_backend_health_check(Some(&check), own.as_ref(), "b").unwrap();
            assert_eq!(merged.is_some(), b["name"] != "sorry");
        }
    }
}
