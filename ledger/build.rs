//! Embeds the SQL migrations (`../migrations` for PostgreSQL, `migrations-sqlite/` for SQLite) as
//! static lists the ledger hands to `sqlx::migrate::Migrator`. This replaces `sqlx::migrate!`,
//! whose proc-macro compiles every sqlx driver a second time for the host: a minute of every cold
//! build. File names follow sqlx's convention, `<version>_<description>.sql`, and the checksum
//! sqlx records is computed from the same bytes, so databases migrated by either way agree.
use std::fmt::Write as _;
use std::path::Path;
use std::{env, fs};

fn main() {
    let out_dir = env::var("OUT_DIR").expect("cargo sets OUT_DIR for build scripts");
    let manifest = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    for (dir, file) in [
        ("../migrations", "postgres_migrations.rs"),
        ("migrations-sqlite", "sqlite_migrations.rs"),
    ] {
        let dir = Path::new(&manifest).join(dir);
        println!("cargo:rerun-if-changed={}", dir.display());
        let code = migration_list(&dir);
        fs::write(Path::new(&out_dir).join(file), code).expect("OUT_DIR is writable");
    }
}

/// `&[(version, description, sql, no_tx)]`, ordered by version.
fn migration_list(dir: &Path) -> String {
    let mut entries: Vec<(i64, String, String, bool)> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("listing migrations").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .map(|path| {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("UTF-8 name");
            let (version, description) = name
                .split_once('_')
                .unwrap_or_else(|| panic!("migration {name} is not <version>_<description>.sql"));
            let version: i64 = version
                .parse()
                .unwrap_or_else(|_| panic!("migration {name} has no numeric version"));
            let sql = fs::read_to_string(&path).expect("migration is UTF-8");
            let no_tx = sql.starts_with("-- no-transaction");
            let path = path.canonicalize().expect("migration path resolves");
            (
                version,
                description.replace('_', " "),
                path.display().to_string(),
                no_tx,
            )
        })
        .collect();
    entries.sort_by_key(|entry| entry.0);
    for pair in entries.windows(2) {
        assert!(
            pair[0].0 != pair[1].0,
            "two migrations share version {}",
            pair[0].0
        );
    }
    let mut code = String::from("&[\n");
    for (version, description, path, no_tx) in entries {
        writeln!(
            code,
            "    ({version}, {description:?}, include_str!({path:?}), {no_tx}),"
        )
        .expect("writing to a String");
    }
    code.push(']');
    code
}
