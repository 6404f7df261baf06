//! Writes Switchboard's CRD manifests to `crds/generated/` (or the directory given as the only
//! argument). A test fails when the committed files differ from what the types generate, so run
//! this after changing a type.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("generated"));
    if let Err(error) = std::fs::create_dir_all(&dir) {
        eprintln!("crdgen: cannot create {}: {error}", dir.display());
        return ExitCode::FAILURE;
    }
    for crd in switchboard_crds::all_crds() {
        let path = dir.join(switchboard_crds::crd_file_name(&crd));
        let yaml = match switchboard_crds::crd_yaml(&crd) {
            Ok(yaml) => yaml,
            Err(error) => {
                eprintln!("crdgen: cannot render {}: {error}", path.display());
                return ExitCode::FAILURE;
            }
        };
        if let Err(error) = std::fs::write(&path, yaml) {
            eprintln!("crdgen: cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
