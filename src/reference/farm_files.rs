//! docs/farm-files.md: the declarative farm files, and what a Reload makes of them.

use super::GENERATED;
use super::markdown::code;
use crate::farms_dir::{DEFAULT_FARMS_DIR, ORIGINS_FILE, RUNTIME};
use crate::state::DEFAULT_STATE_DIR;

pub fn render() -> String {
    format!(
        "# Farm files\n\n{GENERATED}\n\
         Every `*.json` file of {dir} (`nftlbd run --farms-dir DIR` reads another directory; hidden \
         files are skipped) is a [canonical JSON](json.md) document, the same as `ImportConfig` takes: \
         `{{\"farms\": [...], \"policies\": [...]}}`, one or more of each. The files are read when the \
         daemon starts and at each Reload (`Manager.Reload`, varlink `Reload`, `nftlbctl reload`, \
         SIGHUP, `systemctl reload nftlbd`), and put over the saved state in one transaction.\n\n\
         ## Who owns a farm\n\n\
         - A file owns the farms and policies it declares. Their `Origin` (D-Bus `Farm.Origin`, \
         varlink `FarmStatus.origin`, `nftlbctl show`) is the file's path; a farm made over D-Bus or \
         varlink is {runtime}.\n\
         - At each load a file's farm replaces the farm of its name: changes made to it at runtime \
         (over D-Bus or varlink) last until then, unless written back with `RuntimeToPersistent` \
         (`nftlbctl persist FARM`), which puts the farm as it runs in place of its entry in its file, \
         keeping the rest of the file, and replaces the file atomically (a temporary file, fsync, \
         rename). A farm of a file deleted at runtime comes back at the next load; written back, it \
         leaves its file.\n\
         - What health checks found about backends (`health`, `health-reason` and an agent's \
         advice) is runtime state, not configuration: a load keeps it for the backends of the same \
         name, and it is never written to a file.\n\
         - A name a file owned and no file declares any more (the file edited or removed) is \
         deleted. Which file owns which name is saved as {origins} in the state directory, so a file \
         removed while the daemon was stopped deletes its farms at the next start.\n\
         - Farms and policies made at runtime are left alone.\n\
         - A farm a file declares is not renamed at runtime (`InvalidArgument`): rename it in its \
         file and Reload.\n\n\
         ## Refused files\n\n\
         A file is refused whole, named with the field and the reason, when it does not parse, \
         declares a name twice, declares a name another file declares (the file that owned it keeps \
         it; otherwise the first by path), declares the name of a runtime farm or policy, or makes \
         the configuration invalid or unsupported (errors under `farms[NAME]` or `policies[NAME]` are \
         the file's that declares NAME, or that dropped it; an error that names no file's farm \
         refuses every file that would change something). What a refused file owned stays as it is; \
         the other files load, in the same one transaction. The refusals are logged (the journal) \
         and answered: D-Bus `Reload` returns them as `a(ss)` (`PATH: field`, reason), varlink \
         `Reload` as `refused`, and `nftlbctl reload` prints them and exits 65. A directory that \
         cannot be read fails the Reload and changes nothing.\n",
        dir = code(DEFAULT_FARMS_DIR),
        runtime = code(RUNTIME),
        origins = code(&format!("{DEFAULT_STATE_DIR}/{ORIGINS_FILE}")),
    )
}
