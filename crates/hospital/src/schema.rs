//! Schema changes while two programs share one database (issue 10): a new program starts beside
//! the live one against the same database, so each migration declares on its first line whether it
//! is an *expand* one (`-- nonstop: expand`: the program before it keeps working, as the standby)
//! or a *contract* one (`-- nonstop: contract`: applied only once that program cannot come back).
//!
//! [`MigrationSet`] reads the declarations and refuses an expand migration that is not one, naming
//! the file and the statement; [`MigrationSet::apply`] applies all pending migrations, or only
//! those before the first pending contract one ([`Migrations`]).
//!
//! What an expand migration may do, checked against the schema the migrations before it made:
//! create tables and indexes; add columns that are nullable or have a default, with checks and
//! references of their own (and keys or unique indexes, when nullable without a default: the
//! program before leaves them NULL); add rows; set columns it adds itself (a backfill); drop a NOT
//! NULL; keep, widen (`c IN (...)` with more values) or drop a CHECK; and rebuild a table under its
//! own name, SQLite's way of changing a constraint (create the new table, copy every row and column
//! with `INSERT INTO new (cols) SELECT cols FROM old`, drop the old one, rename the new one), when
//! the new table keeps every column with its type, nullability and default, its keys, references
//! and indexes. Anything else done to what existed before is contract, because the program before
//! reads and writes it: dropping or renaming a table, column, index or key; changing a column's
//! type or default, or making it NOT NULL; a NOT NULL column without a default (the program before
//! does not fill it); a new key, unique index, reference or narrower check on existing columns (its
//! writes could be refused); and changing existing rows: `DELETE`, an `UPDATE` of a column it did
//! not add (the standby would read values it did not write, and they cannot be put back if it comes
//! back), an insert that replaces rows. A statement the check does not know (a view, a trigger, a
//! pragma) is refused in an expand migration too: the author declares it contract or teaches the
//! check.
//!
//! The SQL is parsed with `sqlparser` (both dialects' files parse), not matched by text: a
//! rebuild's `DROP TABLE` is fine or not depending on what the file puts in its place, and that
//! takes knowing the tables' columns, so the check keeps a model of the schema as it replays the
//! files in order.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, AssignmentTarget, ColumnDef, ColumnOption, Expr,
    FromTable, InTarget, Insert, ObjectName, ObjectType, RenameTableNameKind, SetExpr, Statement,
    TableConstraint, TableFactor, TableObject, TableWithJoins,
};
use sqlparser::dialect::{Dialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;
use sqlx::migrate::{Migrate, MigrateError, Migration, MigrationType};
use sqlx::{AnyConnection, AnyPool, Connection};

use crate::{Backend, HospitalError};

/// What a migration says it is, on its first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationKind {
    /// `-- nonstop: expand`: the program before it keeps working on the schema it leaves.
    Expand,
    /// `-- nonstop: contract`: only once the program before can no longer come back.
    Contract,
}

impl MigrationKind {
    /// Its name in the declaration.
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationKind::Expand => "expand",
            MigrationKind::Contract => "contract",
        }
    }
}

impl std::fmt::Display for MigrationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which pending migrations a program applies when it opens the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Migrations {
    /// All of them, contract ones included: no older program will use the database again.
    #[default]
    All,
    /// Those before the first pending contract one, in order: what a program starting beside
    /// the live one applies, so that the live one keeps working and can come back as standby.
    ExpandOnly,
}

/// Why migrations are refused.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// A migration file cannot be read, or its name is not `<version>_<description>.sql`.
    #[error("migration {file}: {reason}")]
    File {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// A migration's first line does not declare its kind.
    #[error(
        "migration {file} does not declare its kind: its first line must be `-- nonstop: expand` \
         or `-- nonstop: contract`, not {found:?}"
    )]
    Undeclared {
        /// The file.
        file: String,
        /// Its first line.
        found: String,
    },
    /// A migration's SQL cannot be parsed, so it cannot be checked.
    #[error("migration {file} cannot be parsed: {reason}")]
    Unparsable {
        /// The file.
        file: String,
        /// The parser's message.
        reason: String,
    },
    /// A migration declared expand makes a change the program before it may rely on.
    #[error(
        "migration {file} is declared expand but {change}, which the program before it may rely \
         on: `{statement}` (declare it `-- nonstop: contract`, applied once that program cannot \
         come back)"
    )]
    NotExpand {
        /// The file.
        file: String,
        /// What the statement changes.
        change: String,
        /// The statement.
        statement: String,
    },
    /// The database has a migration that this program does not know (a newer program applied
    /// it) and that is not recorded as an expand one: this program no longer fits the schema.
    #[error(
        "the database has migration {version} ({description}), which this program does not know \
         and which was not applied as an expand migration: a newer program has contracted the \
         schema, and this one cannot use it"
    )]
    NewerContract {
        /// Its version.
        version: i64,
        /// Its description in the database's migration table.
        description: String,
    },
}

impl From<MigrationError> for HospitalError {
    fn from(e: MigrationError) -> HospitalError {
        HospitalError::Migrate(MigrateError::Source(Box::new(e)))
    }
}

/// The kind `sql`'s first line declares.
pub fn declared_kind(file: &str, sql: &str) -> Result<MigrationKind, MigrationError> {
    declaration(file, sql).map(|(kind, _)| kind)
}

/// The kind `sql`'s first line declares, and the text after that line.
fn declaration<'s>(file: &str, sql: &'s str) -> Result<(MigrationKind, &'s str), MigrationError> {
    let (first, body) = sql.split_once('\n').unwrap_or((sql, ""));
    let kind = match first.trim_end() {
        "-- nonstop: expand" => MigrationKind::Expand,
        "-- nonstop: contract" => MigrationKind::Contract,
        other => {
            return Err(MigrationError::Undeclared {
                file: file.to_owned(),
                found: other.chars().take(80).collect(),
            });
        }
    };
    Ok((kind, body))
}

/// How a migration applied by this program is marked in the database's migration table, after
/// its description: an older program that finds it there and does not know it can tell whether it
/// may still use the schema ([`MigrationError::NewerContract`]).
const APPLIED_AS_EXPAND: &str = " (nonstop: expand)";

/// One migration file, with the kind it declares.
#[derive(Debug, Clone)]
pub struct MigrationFile {
    /// Its version, the number its name starts with.
    pub version: i64,
    /// Its file name, e.g. `0008_kiosk_role.sql`.
    pub name: String,
    /// The kind it declares.
    pub kind: MigrationKind,
    /// sqlx's description: the words of its name.
    description: String,
    /// Its whole text, the declaration included.
    sql: String,
}

impl MigrationFile {
    /// The text after the declaration: what runs, and what sqlx's checksum covers. Migrations
    /// applied before files declared their kind were recorded with the checksum (SHA-384) of the
    /// file as it was, which is this text byte for byte, and so does every release since: the
    /// declaration is about the migration, not part of it, so adding it changes no checksum,
    /// and an earlier release that comes back finds the checksums it knows.
    fn body(&self) -> &str {
        self.sql.split_once('\n').map_or("", |(_, body)| body)
    }

    /// The migration sqlx applies.
    fn migration(&self) -> Migration {
        let body = self.body();
        let description = match self.kind {
            MigrationKind::Expand => format!("{}{APPLIED_AS_EXPAND}", self.description),
            MigrationKind::Contract => self.description.clone(),
        };
        Migration::new(
            self.version,
            description.into(),
            MigrationType::Simple,
            body.to_owned().into(),
            // sqlx reads this from the file's first line, where the declaration is now.
            body.starts_with("-- no-transaction"),
        )
    }

    /// Whether `checksum`, recorded when the migration was applied, is this file's: the checksum
    /// of its body ([`MigrationFile::body`]), or of its whole text, as plain sqlx (`sqlx migrate
    /// run`, or a test that copies these files) records it.
    fn applied_as(&self, checksum: &[u8]) -> bool {
        let whole = Migration::new(
            self.version,
            self.description.clone().into(),
            MigrationType::Simple,
            self.sql.clone().into(),
            false,
        );
        *checksum == *self.migration().checksum || *checksum == *whole.checksum
    }
}

/// A backend's migrations, in version order, each declaring its kind, each expand one checked
/// to be one.
#[derive(Debug, Clone)]
pub struct MigrationSet {
    files: Vec<MigrationFile>,
}

impl MigrationSet {
    /// Checks `files`, (file name, text) pairs in any order, named `<version>_<words>.sql`: each
    /// declares its kind, and each declared expand is one, given what those before it made.
    pub fn new(
        backend: Backend,
        files: impl IntoIterator<Item = (String, String)>,
    ) -> Result<MigrationSet, MigrationError> {
        let mut checked = Vec::new();
        for (name, sql) in files {
            let (version, words) = name
                .strip_suffix(".sql")
                .and_then(|stem| stem.split_once('_'))
                .and_then(|(version, words)| Some((version.parse::<i64>().ok()?, words)))
                .ok_or_else(|| MigrationError::File {
                    file: name.clone(),
                    reason: "its name is not <version>_<description>.sql".into(),
                })?;
            if words.ends_with(".up") || words.ends_with(".down") {
                return Err(MigrationError::File {
                    file: name,
                    reason: "reversible migrations are not used: a migration only goes forward"
                        .into(),
                });
            }
            let kind = declared_kind(&name, &sql)?;
            checked.push(MigrationFile {
                version,
                description: words.replace('_', " "),
                name,
                kind,
                sql,
            });
        }
        checked.sort_by_key(|f| f.version);
        if let Some(twice) = checked.windows(2).find(|w| w[0].version == w[1].version) {
            return Err(MigrationError::File {
                file: twice[1].name.clone(),
                reason: format!("{} has the same version", twice[0].name),
            });
        }
        let dialect: &dyn Dialect = match backend {
            Backend::Sqlite => &SQLiteDialect {},
            Backend::Postgres => &PostgreSqlDialect {},
        };
        let mut schema = Schema::default();
        for file in &checked {
            schema.migrate(dialect, &file.name, file.kind, file.body())?;
        }
        Ok(MigrationSet { files: checked })
    }

    /// The `*.sql` files of `dir`, checked as [`MigrationSet::new`] does.
    pub fn from_dir(backend: Backend, dir: &Path) -> Result<MigrationSet, MigrationError> {
        let unreadable = |e: std::io::Error| MigrationError::File {
            file: dir.display().to_string(),
            reason: e.to_string(),
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(unreadable)? {
            let path = entry.map_err(unreadable)?.path();
            if path.extension().is_some_and(|e| e == "sql") {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let sql = std::fs::read_to_string(&path).map_err(|e| MigrationError::File {
                    file: name.clone(),
                    reason: e.to_string(),
                })?;
                files.push((name, sql));
            }
        }
        MigrationSet::new(backend, files)
    }

    /// The migrations, in version order.
    pub fn files(&self) -> &[MigrationFile] {
        &self.files
    }

    /// The migrations the database at `pool` has not applied yet, in order.
    pub async fn pending(&self, pool: &AnyPool) -> Result<Vec<MigrationFile>, HospitalError> {
        let mut conn = pool.acquire().await?;
        self.pending_on(&mut conn).await
    }

    /// Applies the pending migrations `which` says, in order, each in a transaction of its own,
    /// and returns those it applied. Refused, with nothing applied, when an applied migration's
    /// file has changed, or when the database has a migration this set lacks that was not
    /// applied as an expand one (a newer program contracted the schema).
    pub async fn apply(
        &self,
        pool: &AnyPool,
        which: Migrations,
    ) -> Result<Vec<MigrationFile>, HospitalError> {
        let mut conn = pool.acquire().await?;
        // On PostgreSQL an advisory lock: two programs starting at once migrate one at a time.
        conn.lock().await?;
        let applied = self.apply_locked(&mut conn, which).await;
        let unlocked = conn.unlock().await;
        if unlocked.is_err() {
            // Its session may still hold the lock: it must not go back to the pool.
            let _ = conn.detach().close().await;
        }
        let applied = applied?;
        unlocked?;
        Ok(applied)
    }

    async fn apply_locked(
        &self,
        conn: &mut AnyConnection,
        which: Migrations,
    ) -> Result<Vec<MigrationFile>, HospitalError> {
        let mut applied = Vec::new();
        for file in self.pending_on(conn).await? {
            if which == Migrations::ExpandOnly && file.kind == MigrationKind::Contract {
                tracing::info!(
                    component = "hospital",
                    step = "migrate",
                    migration = %file.name,
                    "contract migration left pending, with those after it: the program before \
                     this one may still come back"
                );
                break;
            }
            let took = conn.apply(&file.migration()).await?;
            tracing::info!(
                component = "hospital",
                step = "migrate",
                migration = %file.name,
                kind = %file.kind,
                ms = took.as_millis() as u64,
                "applied migration"
            );
            applied.push(file);
        }
        Ok(applied)
    }

    /// Checks what the database has applied against this set, and returns what it has not.
    async fn pending_on(
        &self,
        conn: &mut AnyConnection,
    ) -> Result<Vec<MigrationFile>, HospitalError> {
        conn.ensure_migrations_table().await?;
        if let Some(version) = conn.dirty_version().await? {
            return Err(MigrateError::Dirty(version).into());
        }
        let applied: HashMap<i64, Vec<u8>> = conn
            .list_applied_migrations()
            .await?
            .into_iter()
            .map(|m| (m.version, m.checksum.into_owned()))
            .collect();
        for file in &self.files {
            if let Some(checksum) = applied.get(&file.version)
                && !file.applied_as(checksum)
            {
                return Err(MigrateError::VersionMismatch(file.version).into());
            }
        }
        // sqlx refuses a database with a migration it does not know; a program that comes back
        // as the standby finds those the program after it applied, and may go on with expand
        // ones only.
        if applied
            .keys()
            .any(|v| self.files.iter().all(|f| f.version != *v))
        {
            let recorded: Vec<(i64, String)> = sqlx::query_as(
                "SELECT version, description FROM _sqlx_migrations ORDER BY version",
            )
            .fetch_all(&mut *conn)
            .await?;
            for (version, description) in recorded {
                if self.files.iter().all(|f| f.version != version)
                    && !description.ends_with(APPLIED_AS_EXPAND)
                {
                    return Err(MigrationError::NewerContract {
                        version,
                        description,
                    }
                    .into());
                }
            }
        }
        Ok(self
            .files
            .iter()
            .filter(|f| !applied.contains_key(&f.version))
            .cloned()
            .collect())
    }
}

/// What the migrations so far made of the schema: enough of it to tell what a migration changes.
/// Names are lower case (SQL folds unquoted names; the files quote none).
#[derive(Debug, Clone, Default)]
struct Schema {
    tables: BTreeMap<String, Table>,
    indexes: BTreeMap<String, Index>,
}

#[derive(Debug, Clone)]
struct Table {
    /// Its name when the migration being checked began; `None`: that migration created it.
    was: Option<String>,
    /// The statement (of the migration being checked) that created it or gave it its name.
    defined_at: Option<usize>,
    columns: Vec<Column>,
    constraints: Vec<Constraint>,
    /// For a table the migration created, the rows it copied into it: from which table, which
    /// columns (`INSERT INTO t (a, b) SELECT a, b FROM s`, nothing else).
    copied_from: Option<(String, Vec<String>)>,
}

impl Table {
    fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

#[derive(Debug, Clone)]
struct Column {
    name: String,
    data_type: String,
    not_null: bool,
    default: Option<String>,
    /// The statement that added or last changed it.
    changed_at: Option<usize>,
}

#[derive(Debug, Clone)]
struct Constraint {
    /// Its name, given or (PostgreSQL's) derived: what `DROP CONSTRAINT` names.
    name: String,
    rule: Rule,
    /// The statement that added it.
    added_at: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Rule {
    /// PRIMARY KEY or UNIQUE.
    Key { primary: bool, columns: Vec<String> },
    /// REFERENCES / FOREIGN KEY, with its actions.
    Reference {
        columns: Vec<String>,
        table: String,
        referred: Vec<String>,
        actions: String,
    },
    /// CHECK, with the column it is declared on, if on one.
    Check {
        column: Option<String>,
        expr: Box<Expr>,
    },
}

impl Rule {
    fn describe(&self) -> String {
        match self {
            Rule::Key { primary, columns } => {
                let kind = if *primary { "PRIMARY KEY" } else { "UNIQUE" };
                format!("{kind} ({})", columns.join(", "))
            }
            Rule::Reference {
                columns,
                table,
                referred,
                ..
            } => format!(
                "FOREIGN KEY ({}) REFERENCES {table} ({})",
                columns.join(", "),
                referred.join(", ")
            ),
            Rule::Check { expr, .. } => format!("CHECK ({expr})"),
        }
    }

    /// The columns a key or reference is on.
    fn columns(&self) -> &[String] {
        match self {
            Rule::Key { columns, .. } | Rule::Reference { columns, .. } => columns,
            Rule::Check { .. } => &[],
        }
    }
}

#[derive(Debug, Clone)]
struct Index {
    table: String,
    /// Each column or expression, with its order and collation.
    columns: Vec<String>,
    unique: bool,
    predicate: Option<String>,
    /// The statement that created it.
    created_at: Option<usize>,
}

impl Index {
    fn same_as(&self, other: &Index) -> bool {
        (&self.table, &self.columns, self.unique, &self.predicate)
            == (&other.table, &other.columns, other.unique, &other.predicate)
    }
}

/// What one migration did, as the check goes through it: the changes an expand migration may not
/// make, found statement by statement or at its end, and where things went, to name the
/// statement.
#[derive(Debug, Default)]
struct Changes {
    /// (statement, what it changes).
    refused: Vec<(usize, String)>,
    gone_tables: HashMap<String, usize>,
    gone_columns: HashMap<(String, String), usize>,
    gone_indexes: HashMap<String, usize>,
    gone_keys: HashMap<String, usize>,
    /// The first statement that changed each table.
    touched: HashMap<String, usize>,
}

impl Changes {
    fn refuse(&mut self, at: usize, change: String) {
        self.refused.push((at, change));
    }

    fn not_understood(&mut self, at: usize) {
        self.refuse(
            at,
            "makes a change the check does not know to be an expand one".into(),
        );
    }

    fn touch(&mut self, table: &str, at: usize) {
        self.touched.entry(table.to_owned()).or_insert(at);
    }

    /// The statement to name for a change to `table` found at the end: the one given, or the
    /// first that changed the table.
    fn at(&self, given: Option<usize>, table: &str) -> usize {
        given
            .or_else(|| self.touched.get(table).copied())
            .unwrap_or(0)
    }
}

impl Schema {
    /// Brings the model up to date with migration `file` (its SQL after the declaration), having
    /// checked it first when it is declared expand.
    fn migrate(
        &mut self,
        dialect: &dyn Dialect,
        file: &str,
        kind: MigrationKind,
        sql: &str,
    ) -> Result<(), MigrationError> {
        let statements =
            Parser::parse_sql(dialect, sql).map_err(|e| MigrationError::Unparsable {
                file: file.to_owned(),
                reason: e.to_string(),
            })?;
        for (name, table) in &mut self.tables {
            table.was = Some(name.clone());
            table.defined_at = None;
            table.copied_from = None;
            table.columns.iter_mut().for_each(|c| c.changed_at = None);
            table.constraints.iter_mut().for_each(|c| c.added_at = None);
        }
        self.indexes.values_mut().for_each(|i| i.created_at = None);
        let before = self.clone();
        let mut changes = Changes::default();
        for (at, statement) in statements.iter().enumerate() {
            self.statement(&before, at, statement, &mut changes);
        }
        if kind == MigrationKind::Contract {
            return Ok(());
        }
        self.settle(&before, &mut changes);
        match changes.refused.into_iter().min_by_key(|(at, _)| *at) {
            None => Ok(()),
            Some((at, change)) => {
                let mut statement = statements[at].to_string();
                if statement.chars().count() > 160 {
                    statement = statement.chars().take(160).collect::<String>() + "…";
                }
                Err(MigrationError::NotExpand {
                    file: file.to_owned(),
                    change,
                    statement,
                })
            }
        }
    }

    fn statement(&mut self, before: &Schema, at: usize, statement: &Statement, c: &mut Changes) {
        match statement {
            Statement::CreateTable(create) => {
                let name = object(&create.name);
                if create.if_not_exists && self.tables.contains_key(&name) {
                    return;
                }
                if create.query.is_some() || create.like.is_some() || create.clone.is_some() {
                    c.not_understood(at);
                }
                let mut table = Table {
                    was: None,
                    defined_at: Some(at),
                    columns: Vec::new(),
                    constraints: Vec::new(),
                    copied_from: None,
                };
                for def in &create.columns {
                    if !add_column(&mut table, &name, def, at) {
                        c.not_understood(at);
                    }
                }
                for constraint in &create.constraints {
                    match table_constraint(&name, constraint, at) {
                        Some(constraint) => table.constraints.push(constraint),
                        None => c.not_understood(at),
                    }
                }
                c.touch(&name, at);
                self.tables.insert(name, table);
            }
            Statement::CreateIndex(create) => {
                let Some(name) = create.name.as_ref().map(object) else {
                    return c.not_understood(at);
                };
                if create.if_not_exists && self.indexes.contains_key(&name) {
                    return;
                }
                let index = Index {
                    table: object(&create.table_name),
                    columns: create
                        .columns
                        .iter()
                        .map(|c| c.to_string().to_lowercase())
                        .collect(),
                    unique: create.unique,
                    predicate: create.predicate.as_ref().map(|p| p.to_string()),
                    created_at: Some(at),
                };
                if !self.tables.contains_key(&index.table) {
                    c.not_understood(at);
                }
                c.touch(&index.table, at);
                self.indexes.insert(name, index);
            }
            Statement::AlterTable(alter) => {
                let mut name = object(&alter.name);
                if !self.tables.contains_key(&name) {
                    return c.not_understood(at);
                }
                c.touch(&name, at);
                for operation in &alter.operations {
                    if let Some(renamed) = self.alter(&name, at, operation, c) {
                        name = renamed;
                        c.touch(&name, at);
                    }
                }
            }
            Statement::Drop {
                object_type: ObjectType::Table,
                names,
                ..
            } => {
                for name in names.iter().map(object) {
                    if self.tables.remove(&name).is_some() {
                        c.touch(&name, at);
                        c.gone_tables.entry(name.clone()).or_insert(at);
                        // A table's indexes go with it.
                        for (index, _) in self.indexes.extract_if(.., |_, i| i.table == name) {
                            c.gone_indexes.entry(index).or_insert(at);
                        }
                    }
                }
            }
            Statement::Drop {
                object_type: ObjectType::Index,
                names,
                ..
            } => {
                for name in names.iter().map(object) {
                    if let Some(index) = self.indexes.remove(&name) {
                        c.touch(&index.table, at);
                        c.gone_indexes.entry(name).or_insert(at);
                    }
                }
            }
            Statement::Insert(insert) => self.insert(before, at, statement, insert, c),
            Statement::Update(update) => {
                let Some(table) = relation(&update.table) else {
                    return c.not_understood(at);
                };
                for assignment in &update.assignments {
                    let columns = match &assignment.target {
                        AssignmentTarget::ColumnName(name) => vec![object(name)],
                        AssignmentTarget::Tuple(names) => names.iter().map(object).collect(),
                    };
                    for column in columns {
                        if self.is_old_column(before, &table, &column) {
                            c.refuse(
                                at,
                                format!("changes {table}.{column} in rows that exist already"),
                            );
                        }
                    }
                }
            }
            Statement::Delete(delete) => {
                let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) =
                    &delete.from;
                for table in from.iter().filter_map(relation) {
                    if self.old_rows(before, &table).is_some() {
                        c.refuse(at, format!("deletes rows of table {table}"));
                    }
                }
            }
            _ => c.not_understood(at),
        }
    }

    /// One operation of `ALTER TABLE table`; the table's new name if it renames it.
    fn alter(
        &mut self,
        table: &str,
        at: usize,
        operation: &AlterTableOperation,
        c: &mut Changes,
    ) -> Option<String> {
        let Some(t) = self.tables.get_mut(table) else {
            c.not_understood(at);
            return None;
        };
        match operation {
            AlterTableOperation::AddColumn {
                column_def,
                if_not_exists,
                ..
            } => {
                let exists = t.column(&column_def.name.value.to_lowercase()).is_some();
                if *if_not_exists && exists {
                    return None;
                }
                if !add_column(t, table, column_def, at) {
                    c.not_understood(at);
                }
            }
            AlterTableOperation::AddConstraint { constraint, .. } => {
                match table_constraint(table, constraint, at) {
                    Some(constraint) => t.constraints.push(constraint),
                    None => c.not_understood(at),
                }
            }
            AlterTableOperation::DropConstraint {
                name, if_exists, ..
            } => {
                let name = name.value.to_lowercase();
                match t.constraints.iter().position(|k| k.name == name) {
                    Some(i) => {
                        if !matches!(t.constraints[i].rule, Rule::Check { .. }) {
                            c.gone_keys.entry(table.to_owned()).or_insert(at);
                        }
                        t.constraints.remove(i);
                    }
                    None if *if_exists => {}
                    None => c.refuse(
                        at,
                        format!("drops constraint {name}, which the check does not know"),
                    ),
                }
            }
            AlterTableOperation::DropColumn { column_names, .. } => {
                for column in column_names.iter().map(|c| c.value.to_lowercase()) {
                    t.columns.retain(|k| k.name != column);
                    t.constraints.retain(|k| match &k.rule {
                        Rule::Check { column: on, .. } => on.as_ref() != Some(&column),
                        rule => !rule.columns().contains(&column),
                    });
                    c.gone_columns
                        .entry((table.to_owned(), column))
                        .or_insert(at);
                }
            }
            AlterTableOperation::RenameColumn {
                old_column_name,
                new_column_name,
            } => {
                let (old, new) = (
                    old_column_name.value.to_lowercase(),
                    new_column_name.value.to_lowercase(),
                );
                for column in t.columns.iter_mut().filter(|k| k.name == old) {
                    column.name.clone_from(&new);
                    column.changed_at = Some(at);
                }
                for constraint in &mut t.constraints {
                    match &mut constraint.rule {
                        Rule::Key { columns, .. } | Rule::Reference { columns, .. } => columns
                            .iter_mut()
                            .filter(|k| **k == old)
                            .for_each(|k| k.clone_from(&new)),
                        Rule::Check { column, .. } => {
                            if column.as_ref() == Some(&old) {
                                *column = Some(new.clone());
                            }
                        }
                    }
                }
                c.gone_columns.entry((table.to_owned(), old)).or_insert(at);
            }
            AlterTableOperation::RenameTable { table_name } => {
                let (RenameTableNameKind::To(to) | RenameTableNameKind::As(to)) = table_name;
                let to = object(to);
                let mut moved = self.tables.remove(table)?;
                moved.defined_at = Some(at);
                self.tables.insert(to.clone(), moved);
                // Indexes and references follow a renamed table (in SQLite as in PostgreSQL).
                for index in self.indexes.values_mut().filter(|i| i.table == table) {
                    index.table.clone_from(&to);
                }
                for other in self.tables.values_mut() {
                    for constraint in &mut other.constraints {
                        if let Rule::Reference { table: refers, .. } = &mut constraint.rule
                            && refers == table
                        {
                            refers.clone_from(&to);
                        }
                    }
                }
                c.gone_tables.entry(table.to_owned()).or_insert(at);
                return Some(to);
            }
            AlterTableOperation::AlterColumn { column_name, op } => {
                let name = column_name.value.to_lowercase();
                let Some(column) = t.columns.iter_mut().find(|k| k.name == name) else {
                    c.not_understood(at);
                    return None;
                };
                match op {
                    AlterColumnOperation::SetNotNull => column.not_null = true,
                    AlterColumnOperation::DropNotNull => column.not_null = false,
                    AlterColumnOperation::SetDefault { value } => {
                        column.default = Some(value.to_string())
                    }
                    AlterColumnOperation::DropDefault => column.default = None,
                    AlterColumnOperation::SetDataType { data_type, .. } => {
                        column.data_type = data_type.to_string().to_uppercase()
                    }
                    _ => c.not_understood(at),
                }
                column.changed_at = Some(at);
            }
            _ => c.not_understood(at),
        }
        None
    }

    fn insert(
        &mut self,
        before: &Schema,
        at: usize,
        statement: &Statement,
        insert: &Insert,
        c: &mut Changes,
    ) {
        let TableObject::TableName(target) = &insert.table else {
            return c.not_understood(at);
        };
        let table = object(target);
        if (insert.or.is_some() || insert.on.is_some() || insert.replace_into)
            && self.old_rows(before, &table).is_some()
        {
            c.refuse(
                at,
                format!("may replace rows of table {table} that exist already"),
            );
        }
        // A rebuild's copy: `INSERT INTO new (a, b) SELECT a, b FROM old` and nothing else,
        // which the statement's own normalised text shows.
        let Some(SetExpr::Select(select)) = insert.source.as_ref().map(|q| q.body.as_ref()) else {
            return;
        };
        let [from] = select.from.as_slice() else {
            return;
        };
        let TableFactor::Table { name: source, .. } = &from.relation else {
            return;
        };
        let columns: Vec<String> = insert.columns.iter().map(|c| c.to_string()).collect();
        let copy = format!(
            "INSERT INTO {target} ({0}) SELECT {0} FROM {source}",
            columns.join(", ")
        );
        if statement.to_string() == copy
            && let Some(t) = self.tables.get_mut(&table)
            && t.was.is_none()
        {
            let columns = columns.iter().map(|c| c.to_lowercase()).collect();
            t.copied_from = Some((object(source), columns));
        }
    }

    /// The table, as the migration began, whose rows `table` holds: itself, or the one a rebuild
    /// copied into it; `None` for a table the migration created and filled with none.
    fn old_rows<'b>(&self, before: &'b Schema, table: &str) -> Option<&'b Table> {
        let t = self.tables.get(table)?;
        let source = t
            .was
            .as_deref()
            .or(t.copied_from.as_ref().map(|(from, _)| from.as_str()))?;
        before.tables.get(source)
    }

    /// Whether `table.column` holds values of rows that existed before the migration.
    fn is_old_column(&self, before: &Schema, table: &str, column: &str) -> bool {
        self.old_rows(before, table)
            .is_some_and(|old| old.column(column).is_some())
    }

    /// What the migration did to the tables and indexes that existed before it, once it is
    /// through: what the program before relies on must still be there.
    fn settle(&self, before: &Schema, c: &mut Changes) {
        let mut refused = Vec::new();
        for (name, old) in &before.tables {
            let Some(new) = self.tables.get(name) else {
                let at = c.at(c.gone_tables.get(name).copied(), name);
                refused.push((at, format!("drops (or renames) table {name}")));
                continue;
            };
            match new.was.as_deref() {
                Some(was) if was == name => {}
                Some(was) => {
                    let at = c.at(new.defined_at, name);
                    refused.push((at, format!("puts table {was} in place of table {name}")));
                    continue;
                }
                None => {
                    // A rebuild: its rows must all be copied from the table it replaces.
                    let copied = new.copied_from.as_ref().filter(|(from, columns)| {
                        from == name && old.columns.iter().all(|k| columns.contains(&k.name))
                    });
                    if copied.is_none() {
                        let at = c.at(new.defined_at, name);
                        refused.push((
                            at,
                            format!(
                                "replaces table {name} with one that was not filled with a copy \
                                 of its every row and column (INSERT INTO new (columns) SELECT \
                                 columns FROM {name})"
                            ),
                        ));
                        continue;
                    }
                }
            }
            table_changes(name, old, new, c, &mut refused);
        }
        for (name, old) in &before.indexes {
            if !self.indexes.get(name).is_some_and(|new| new.same_as(old)) {
                let at = c.at(c.gone_indexes.get(name).copied(), &old.table);
                refused.push((at, format!("drops (or changes) index {name}")));
            }
        }
        for (name, index) in &self.indexes {
            let new = !before
                .indexes
                .get(name)
                .is_some_and(|old| old.same_as(index));
            if new
                && index.unique
                && let Some(table) = self.tables.get(&index.table)
                && let Some(old) = self.old_rows(before, &index.table)
                && !index.columns.iter().all(|k| free_column(table, old, k))
            {
                let at = c.at(index.created_at, &index.table);
                refused.push((
                    at,
                    format!(
                        "adds unique index {name} over rows of table {} that exist already",
                        index.table
                    ),
                ));
            }
        }
        c.refused.extend(refused);
    }
}

/// What the migration changed in table `name`, which existed before it (`old`) and is `new` now.
fn table_changes(
    name: &str,
    old: &Table,
    new: &Table,
    c: &Changes,
    refused: &mut Vec<(usize, String)>,
) {
    for was in &old.columns {
        let column = format!("{name}.{}", was.name);
        let Some(now) = new.column(&was.name) else {
            let gone = c.gone_columns.get(&(name.to_owned(), was.name.clone()));
            let at = c.at(gone.copied().or(new.defined_at), name);
            refused.push((at, format!("drops (or renames) column {column}")));
            continue;
        };
        let at = c.at(now.changed_at.or(new.defined_at), name);
        if now.data_type != was.data_type {
            refused.push((
                at,
                format!(
                    "changes the type of {column} from {} to {}",
                    was.data_type, now.data_type
                ),
            ));
        }
        if now.not_null && !was.not_null {
            refused.push((at, format!("makes {column} NOT NULL")));
        }
        if was.default.is_some() && now.default != was.default {
            refused.push((at, format!("changes or drops the default of {column}")));
        }
    }
    for now in &new.columns {
        if old.column(&now.name).is_none() && now.not_null && now.default.is_none() {
            let at = c.at(now.changed_at.or(new.defined_at), name);
            refused.push((
                at,
                format!(
                    "adds NOT NULL column {name}.{} without a default, which the program before \
                     does not fill",
                    now.name
                ),
            ));
        }
    }
    let checks = |t: &Table| -> Vec<Expr> {
        t.constraints
            .iter()
            .filter_map(|k| match &k.rule {
                Rule::Check { expr, .. } => Some(expr.as_ref().clone()),
                _ => None,
            })
            .collect()
    };
    let old_checks = checks(old);
    for was in &old.constraints {
        if !matches!(was.rule, Rule::Check { .. })
            && !new.constraints.iter().any(|k| k.rule == was.rule)
        {
            let at = c.at(c.gone_keys.get(name).copied().or(new.defined_at), name);
            refused.push((at, format!("drops {} of table {name}", was.rule.describe())));
        }
    }
    for now in &new.constraints {
        let at = c.at(now.added_at.or(new.defined_at), name);
        match &now.rule {
            Rule::Check { column, expr } => {
                let on = column.clone().or_else(|| in_list_column(expr));
                let on_new_column = on.is_some_and(|k| old.column(&k).is_none());
                if !on_new_column && !old_checks.iter().any(|was| implied_by(expr, was)) {
                    refused.push((
                        at,
                        format!(
                            "adds {} to table {name}, which rows that exist or the program \
                             before's writes may fail",
                            now.rule.describe()
                        ),
                    ));
                }
            }
            Rule::Key { columns, .. } => {
                if !old.constraints.iter().any(|k| k.rule == now.rule)
                    && !columns.iter().all(|k| free_column(new, old, k))
                {
                    refused.push((
                        at,
                        format!(
                            "adds {} to rows of table {name} that exist already",
                            now.rule.describe()
                        ),
                    ));
                }
            }
            Rule::Reference { columns, .. } => {
                if !old.constraints.iter().any(|k| k.rule == now.rule)
                    && columns.iter().any(|k| old.column(k).is_some())
                {
                    refused.push((
                        at,
                        format!(
                            "adds {} to columns of table {name} that exist already",
                            now.rule.describe()
                        ),
                    ));
                }
            }
        }
    }
}

/// Whether `column` of `table` is one the migration added, NULL unless written: a key or unique
/// index on it refuses none of the program before's writes (which leave it NULL).
fn free_column(table: &Table, old: &Table, column: &str) -> bool {
    old.column(column).is_none()
        && table
            .column(column)
            .is_some_and(|k| !k.not_null && k.default.is_none())
}

/// Whether every row `was` lets through, `now` does too: the same check, or `c IN (...)` over
/// more values.
fn implied_by(now: &Expr, was: &Expr) -> bool {
    if unnested(now).to_string() == unnested(was).to_string() {
        return true;
    }
    match (in_list(now), in_list(was)) {
        (Some((a, more)), Some((b, fewer))) => {
            a.to_string().eq_ignore_ascii_case(&b.to_string())
                && fewer
                    .iter()
                    .all(|v| more.iter().any(|w| w.to_string() == v.to_string()))
        }
        _ => false,
    }
}

/// `c IN (v, w, ...)`: c and the values.
fn in_list(expr: &Expr) -> Option<(&Expr, &[Expr])> {
    match unnested(expr) {
        Expr::In {
            expr,
            target: InTarget::List(values),
            negated: false,
            global: false,
        } => Some((expr, values)),
        _ => None,
    }
}

/// The column of a `c IN (...)` check.
fn in_list_column(expr: &Expr) -> Option<String> {
    match in_list(expr)? {
        (Expr::Identifier(ident), _) => Some(ident.value.to_lowercase()),
        _ => None,
    }
}

fn unnested(mut expr: &Expr) -> &Expr {
    while let Expr::Nested(inner) = expr {
        expr = inner;
    }
    expr
}

/// Adds column `def` to `table` (named `name`), with its constraints; `false` if it has an option
/// the model does not know.
fn add_column(table: &mut Table, name: &str, def: &ColumnDef, at: usize) -> bool {
    let column = def.name.value.to_lowercase();
    let mut added = Column {
        name: column.clone(),
        data_type: def.data_type.to_string().to_uppercase(),
        not_null: false,
        default: None,
        changed_at: Some(at),
    };
    let mut known = true;
    for option in &def.options {
        let given = option.name.as_ref().map(|n| n.value.to_lowercase());
        // PostgreSQL's names for a column's constraints, which `DROP CONSTRAINT` uses.
        let named = |suffix: &str| {
            given
                .clone()
                .unwrap_or_else(|| format!("{name}_{column}_{suffix}"))
        };
        let (constraint, rule) = match &option.option {
            ColumnOption::NotNull => {
                added.not_null = true;
                continue;
            }
            ColumnOption::Null => {
                added.not_null = false;
                continue;
            }
            ColumnOption::Default(value) => {
                added.default = Some(value.to_string());
                continue;
            }
            ColumnOption::Collation(collation) => {
                added.data_type = format!("{} COLLATE {collation}", added.data_type);
                continue;
            }
            ColumnOption::PrimaryKey(_) => (
                given.clone().unwrap_or_else(|| format!("{name}_pkey")),
                Rule::Key {
                    primary: true,
                    columns: vec![column.clone()],
                },
            ),
            ColumnOption::Unique(_) => (
                named("key"),
                Rule::Key {
                    primary: false,
                    columns: vec![column.clone()],
                },
            ),
            ColumnOption::ForeignKey(fk) => (
                named("fkey"),
                Rule::Reference {
                    columns: vec![column.clone()],
                    table: object(&fk.foreign_table),
                    referred: idents(&fk.referred_columns),
                    actions: format!("{:?} {:?}", fk.on_delete, fk.on_update),
                },
            ),
            ColumnOption::Check(check) => (
                check
                    .name
                    .as_ref()
                    .map(|n| n.value.to_lowercase())
                    .unwrap_or_else(|| named("check")),
                Rule::Check {
                    column: Some(column.clone()),
                    expr: check.expr.clone(),
                },
            ),
            _ => {
                known = false;
                continue;
            }
        };
        table.constraints.push(Constraint {
            name: constraint,
            rule,
            added_at: Some(at),
        });
    }
    table.columns.push(added);
    known
}

/// A table's constraint (in `CREATE TABLE` or `ADD CONSTRAINT`), if the model knows its kind.
fn table_constraint(table: &str, constraint: &TableConstraint, at: usize) -> Option<Constraint> {
    let lower = |n: &Option<sqlparser::ast::Ident>| n.as_ref().map(|n| n.value.to_lowercase());
    let key_columns = |columns: &[sqlparser::ast::IndexColumn]| -> Vec<String> {
        columns
            .iter()
            .map(|c| c.column.expr.to_string().to_lowercase())
            .collect()
    };
    let (name, rule) = match constraint {
        TableConstraint::PrimaryKey(key) => (
            lower(&key.name).unwrap_or_else(|| format!("{table}_pkey")),
            Rule::Key {
                primary: true,
                columns: key_columns(&key.columns),
            },
        ),
        TableConstraint::Unique(key) => {
            let columns = key_columns(&key.columns);
            (
                lower(&key.name).unwrap_or_else(|| format!("{table}_{}_key", columns.join("_"))),
                Rule::Key {
                    primary: false,
                    columns,
                },
            )
        }
        TableConstraint::ForeignKey(fk) => {
            let columns = idents(&fk.columns);
            (
                lower(&fk.name).unwrap_or_else(|| format!("{table}_{}_fkey", columns.join("_"))),
                Rule::Reference {
                    columns,
                    table: object(&fk.foreign_table),
                    referred: idents(&fk.referred_columns),
                    actions: format!("{:?} {:?}", fk.on_delete, fk.on_update),
                },
            )
        }
        TableConstraint::Check(check) => (
            lower(&check.name).unwrap_or_else(|| format!("{table}_check")),
            Rule::Check {
                column: None,
                expr: check.expr.clone(),
            },
        ),
        _ => return None,
    };
    Some(Constraint {
        name,
        rule,
        added_at: Some(at),
    })
}

/// An object's own name (without its schema), lower case.
fn object(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(|part| part.as_ident())
        .map_or_else(|| name.to_string(), |ident| ident.value.clone())
        .to_lowercase()
}

fn idents(idents: &[sqlparser::ast::Ident]) -> Vec<String> {
    idents.iter().map(|i| i.value.to_lowercase()).collect()
}

/// The table an `UPDATE` or `DELETE` is on.
fn relation(table: &TableWithJoins) -> Option<String> {
    match &table.relation {
        TableFactor::Table { name, .. } => Some(object(name)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped migrations of `backend`, then `sql` as migration 0099.
    fn check_after_shipped(backend: Backend, sql: &str) -> Result<MigrationKind, MigrationError> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(match backend {
            Backend::Sqlite => "migrations/sqlite",
            Backend::Postgres => "migrations/postgres",
        });
        let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(path).unwrap())
            })
            .collect();
        files.push(("0099_change.sql".into(), sql.into()));
        MigrationSet::new(backend, files).map(|set| set.files().last().unwrap().kind)
    }

    /// Each change an expand migration may not make, on the backend whose syntax it is, with
    /// what the refusal says about it.
    #[test]
    fn contract_changes_declared_expand_are_refused_with_what_they_change() {
        use Backend::{Postgres, Sqlite};
        let cases: &[(Backend, &str, &str)] = &[
            (Sqlite, "DROP TABLE screen;", "drops (or renames) table screen"),
            (Sqlite, "ALTER TABLE screen RENAME TO wall_screen;", "drops (or renames) table screen"),
            (Sqlite, "ALTER TABLE patient DROP COLUMN phone;", "drops (or renames) column patient.phone"),
            (Sqlite, "ALTER TABLE patient RENAME COLUMN phone TO mobile;", "drops (or renames) column patient.phone"),
            (Sqlite, "DROP INDEX patient_phone;", "drops (or changes) index patient_phone"),
            (Postgres, "ALTER TABLE patient ALTER COLUMN insurance_number SET NOT NULL;", "makes patient.insurance_number NOT NULL"),
            (Postgres, "ALTER TABLE patient ALTER COLUMN phone TYPE VARCHAR(20);", "changes the type of patient.phone from TEXT to VARCHAR(20)"),
            (Postgres, "ALTER TABLE schedule ALTER COLUMN calls_made DROP DEFAULT;", "changes or drops the default of schedule.calls_made"),
            (Sqlite, "ALTER TABLE patient ADD COLUMN email TEXT NOT NULL;", "adds NOT NULL column patient.email without a default"),
            (Sqlite, "CREATE UNIQUE INDEX patient_phone_once ON patient (phone);", "adds unique index patient_phone_once over rows of table patient"),
            (Postgres, "ALTER TABLE patient ADD CONSTRAINT patient_phone_once UNIQUE (phone);", "adds UNIQUE (phone) to rows of table patient"),
            (Postgres, "ALTER TABLE patient ADD CONSTRAINT adult CHECK (birth_date < '2010-01-01');", "adds CHECK (birth_date < '2010-01-01') to table patient"),
            (Postgres, "ALTER TABLE app_user DROP CONSTRAINT app_user_role_check;\nALTER TABLE app_user ADD CONSTRAINT app_user_role_check CHECK (role IN ('clerk', 'admin'));", "adds CHECK (role IN ('clerk', 'admin')) to table app_user"),
            (Postgres, "ALTER TABLE payment DROP CONSTRAINT payment_idempotency_key_key;", "drops UNIQUE (idempotency_key) of table payment"),
            (Sqlite, "DELETE FROM api_token WHERE expires_at < 0;", "deletes rows of table api_token"),
            (Sqlite, "UPDATE patient SET phone = '';", "changes patient.phone in rows that exist already"),
            (Sqlite, "INSERT OR REPLACE INTO department (id, code, name) VALUES (1, 'IM', 'x');", "may replace rows of table department"),
            (Sqlite, "CREATE VIEW adults AS SELECT * FROM patient;", "makes a change the check does not know to be an expand one"),
            // A rebuild that leaves a column out, or does not copy the rows.
            (Sqlite, "CREATE TABLE screen_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL, secret_sha256 TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL, created_by TEXT NOT NULL);
                      INSERT INTO screen_new (id, name, secret_sha256, created_at, created_by) SELECT id, name, secret_sha256, created_at, created_by FROM screen;
                      DROP TABLE screen;
                      ALTER TABLE screen_new RENAME TO screen;", "replaces table screen with one that was not filled with a copy"),
            (Sqlite, "CREATE TABLE screen_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL, secret_sha256 TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL, created_by TEXT NOT NULL, revoked_at INTEGER);
                      DROP TABLE screen;
                      ALTER TABLE screen_new RENAME TO screen;", "replaces table screen with one that was not filled with a copy"),
            (Sqlite, "CREATE TABLE screen_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL, secret_sha256 TEXT NOT NULL, created_at INTEGER NOT NULL, created_by TEXT NOT NULL, revoked_at INTEGER);
                      INSERT INTO screen_new (id, name, secret_sha256, created_at, created_by, revoked_at) SELECT id, name, secret_sha256, created_at, created_by, revoked_at FROM screen;
                      DROP TABLE screen;
                      ALTER TABLE screen_new RENAME TO screen;", "drops UNIQUE (secret_sha256) of table screen"),
        ];
        for (backend, sql, change) in cases {
            let expand = format!("-- nonstop: expand\n{sql}\n");
            let refused = check_after_shipped(*backend, &expand)
                .unwrap_err()
                .to_string();
            assert!(
                refused.starts_with("migration 0099_change.sql is declared expand but ")
                    && refused.contains(change),
                "{backend:?} {sql}: {refused}"
            );
            let contract = format!("-- nonstop: contract\n{sql}\n");
            assert_eq!(
                check_after_shipped(*backend, &contract).unwrap(),
                MigrationKind::Contract,
                "{sql}"
            );
        }
    }

    /// What an expand migration may do passes.
    #[test]
    fn expand_changes_pass() {
        use Backend::{Postgres, Sqlite};
        let cases: &[(Backend, &str)] = &[
            (Sqlite, "CREATE TABLE ward (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);\nCREATE UNIQUE INDEX ward_name ON ward (name);"),
            (Sqlite, "ALTER TABLE patient ADD COLUMN email TEXT;\nUPDATE patient SET email = phone || '@example.org';"),
            (Sqlite, "ALTER TABLE patient ADD COLUMN verified INTEGER NOT NULL DEFAULT 0 CHECK (verified IN (0, 1));"),
            (Sqlite, "ALTER TABLE patient ADD COLUMN ward_id INTEGER REFERENCES department(id);\nCREATE UNIQUE INDEX patient_ward ON patient (ward_id);"),
            (Sqlite, "CREATE INDEX patient_birth ON patient (birth_date);\nINSERT INTO department (code, name) VALUES ('ER', 'Emergency');"),
            (Sqlite, "CREATE TABLE tmp (id INTEGER);\nDELETE FROM tmp;\nDROP TABLE tmp;"),
            (Postgres, "ALTER TABLE app_user DROP CONSTRAINT app_user_role_check;\nALTER TABLE app_user ADD CONSTRAINT app_user_role_check CHECK (role IN ('clerk', 'cashier', 'doctor', 'admin', 'kiosk', 'auditor', 'nurse'));"),
            (Postgres, "ALTER TABLE patient ALTER COLUMN phone DROP NOT NULL;\nALTER TABLE patient ALTER COLUMN insurance_number SET DEFAULT '';"),
            // A rebuild keeping everything, as SQLite changes a constraint.
            (Sqlite, "CREATE TABLE screen_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL, secret_sha256 TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL, created_by TEXT NOT NULL, revoked_at INTEGER, note TEXT);
                      INSERT INTO screen_new (id, name, secret_sha256, created_at, created_by, revoked_at) SELECT id, name, secret_sha256, created_at, created_by, revoked_at FROM screen;
                      DROP TABLE screen;
                      ALTER TABLE screen_new RENAME TO screen;"),
        ];
        for (backend, sql) in cases {
            let expand = format!("-- nonstop: expand\n{sql}\n");
            assert_eq!(
                check_after_shipped(*backend, &expand).unwrap(),
                MigrationKind::Expand,
                "{sql}"
            );
        }
    }

    /// sqlx records the checksum of what a migration runs: the file without its declaration,
    /// byte for byte the file an earlier release shipped.
    #[test]
    fn the_checksum_is_of_the_file_without_its_declaration() {
        let earlier = "CREATE TABLE ward (id INTEGER PRIMARY KEY);\n";
        let set = MigrationSet::new(
            Backend::Sqlite,
            [(
                "0001_ward.sql".to_owned(),
                format!("-- nonstop: expand\n{earlier}"),
            )],
        )
        .unwrap();
        let file = &set.files()[0];
        let plain = Migration::new(
            1,
            "ward".into(),
            MigrationType::Simple,
            earlier.into(),
            false,
        );
        assert_eq!(file.migration().checksum, plain.checksum);
        assert_eq!(file.migration().sql, earlier);
        assert!(file.applied_as(&plain.checksum));
    }

    #[test]
    fn a_missing_or_unknown_declaration_is_refused() {
        for sql in [
            "CREATE TABLE ward (id INTEGER);",
            "-- nonstop: maybe\nCREATE TABLE ward (id INTEGER);",
            "\n-- nonstop: expand\nCREATE TABLE ward (id INTEGER);",
        ] {
            let refused =
                MigrationSet::new(Backend::Sqlite, [("0001_ward.sql".into(), sql.into())])
                    .unwrap_err()
                    .to_string();
            assert!(
                refused.starts_with("migration 0001_ward.sql does not declare its kind"),
                "{refused}"
            );
        }
    }
}
