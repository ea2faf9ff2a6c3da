//! Reading `SHOW GRANTS`: each line parsed into a typed [`Statement`], and what the account's
//! privileges let a dump see in each database ([`Grants::backup_privileges`]).
//!
//! The lines are parsed, never searched for substrings: `REPLICATION SLAVE ADMIN` is not
//! `REPLICATION SLAVE`, an account named `np_select` holds no `SELECT`, and a role grant
//! (`GRANT role TO user`) or a proxy grant is no privilege at all.
//!
//! **Which lines count.** `SHOW GRANTS` without `FOR`, on a fresh connection, lists what that
//! session may do, which is what the dump tool's own fresh session may do: the account's grants,
//! those of its default role and of the roles granted to that role (MariaDB lists them when the
//! role is active), and those granted `TO PUBLIC` (MariaDB 10.11 and later). `information_schema`'s
//! `SCHEMA_PRIVILEGES` and `USER_PRIVILEGES` show the account's own rows only, without its roles or
//! `PUBLIC`, so they would report privileges missing that the dump has.
//!
//! **How a database's privileges are resolved** follows the server, measured on MariaDB 10.11:
//! global privileges apply everywhere (except where a MySQL partial revoke takes them back); of
//! the database-level grants of one grantee that match a database, the server applies *one*, the
//! most specific by an order it does not document (`app_x` wins over `app\_%` for `app_x`,
//! `ap__x` over `app%`, `%x` over `a%`); the grantee's, its roles' and `PUBLIC`'s add up. So a
//! grant naming the database without wildcards counts alone, and where only patterns match, only
//! what they all give is counted: whichever the server picks gives at least that. The answer is
//! exact whenever one grant matches, and never claims a privilege the session lacks. Names compare
//! exactly, as on a server with `lower_case_table_names = 0`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::error::{Error, Result};

/// One privilege, as `SHOW GRANTS` names it (synonyms folded: `REPLICATION REPLICA` is
/// [`Privilege::ReplicationSlave`], `ALL` is [`Privilege::All`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[allow(missing_docs)] // each variant is the privilege of the same name
pub enum Privilege {
    /// `ALL PRIVILEGES`: every privilege of its level except `GRANT OPTION` and `PROXY`.
    All,
    /// `USAGE`: no privilege.
    Usage,
    Select,
    Insert,
    Update,
    Delete,
    Create,
    Drop,
    Reload,
    Shutdown,
    Process,
    File,
    References,
    Index,
    Alter,
    ShowDatabases,
    Super,
    CreateTemporaryTables,
    LockTables,
    Execute,
    ReplicationSlave,
    /// MySQL's name, and MariaDB's before 10.5, for what MariaDB now calls `BINLOG MONITOR`.
    ReplicationClient,
    BinlogMonitor,
    CreateView,
    ShowView,
    CreateRoutine,
    AlterRoutine,
    CreateUser,
    Event,
    Trigger,
    CreateTablespace,
    DeleteHistory,
    SetUser,
    FederatedAdmin,
    ConnectionAdmin,
    ReadOnlyAdmin,
    ReplicationSlaveAdmin,
    ReplicationMasterAdmin,
    BinlogAdmin,
    BinlogReplay,
    SlaveMonitor,
    /// MariaDB 11.3 and later: `SHOW CREATE` of routines without `SELECT` on `mysql.proc`.
    ShowCreateRoutine,
    CreateRole,
    DropRole,
    /// `PROXY`, only ever granted on an account ([`Statement::Proxy`]).
    Proxy,
    /// `GRANT OPTION` (also written `WITH GRANT OPTION` after the grantee).
    GrantOption,
    /// Any other name, upper-cased with single spaces (MySQL's dynamic privileges such as
    /// `BACKUP_ADMIN`, privileges of later servers).
    Other(String),
}

impl Privilege {
    /// The privilege for a name as `SHOW GRANTS` writes it (any case, any spacing).
    pub fn from_name(name: &str) -> Privilege {
        let name = name
            .split_whitespace()
            .map(str::to_ascii_uppercase)
            .collect::<Vec<_>>()
            .join(" ");
        match name.as_str() {
            "ALL" | "ALL PRIVILEGES" => Self::All,
            "USAGE" => Self::Usage,
            "SELECT" => Self::Select,
            "INSERT" => Self::Insert,
            "UPDATE" => Self::Update,
            "DELETE" => Self::Delete,
            "CREATE" => Self::Create,
            "DROP" => Self::Drop,
            "RELOAD" => Self::Reload,
            "SHUTDOWN" => Self::Shutdown,
            "PROCESS" => Self::Process,
            "FILE" => Self::File,
            "REFERENCES" => Self::References,
            "INDEX" => Self::Index,
            "ALTER" => Self::Alter,
            "SHOW DATABASES" => Self::ShowDatabases,
            "SUPER" => Self::Super,
            "CREATE TEMPORARY TABLES" => Self::CreateTemporaryTables,
            "LOCK TABLES" => Self::LockTables,
            "EXECUTE" => Self::Execute,
            "REPLICATION SLAVE" | "REPLICATION REPLICA" => Self::ReplicationSlave,
            "REPLICATION CLIENT" => Self::ReplicationClient,
            "BINLOG MONITOR" => Self::BinlogMonitor,
            "CREATE VIEW" => Self::CreateView,
            "SHOW VIEW" => Self::ShowView,
            "CREATE ROUTINE" => Self::CreateRoutine,
            "ALTER ROUTINE" => Self::AlterRoutine,
            "CREATE USER" => Self::CreateUser,
            "EVENT" => Self::Event,
            "TRIGGER" => Self::Trigger,
            "CREATE TABLESPACE" => Self::CreateTablespace,
            "DELETE HISTORY" => Self::DeleteHistory,
            "SET USER" => Self::SetUser,
            "FEDERATED ADMIN" => Self::FederatedAdmin,
            "CONNECTION ADMIN" => Self::ConnectionAdmin,
            "READ_ONLY ADMIN" => Self::ReadOnlyAdmin,
            "REPLICATION SLAVE ADMIN" | "REPLICATION REPLICA ADMIN" => Self::ReplicationSlaveAdmin,
            "REPLICATION MASTER ADMIN" => Self::ReplicationMasterAdmin,
            "BINLOG ADMIN" => Self::BinlogAdmin,
            "BINLOG REPLAY" => Self::BinlogReplay,
            "SLAVE MONITOR" | "REPLICA MONITOR" => Self::SlaveMonitor,
            "SHOW CREATE ROUTINE" => Self::ShowCreateRoutine,
            "CREATE ROLE" => Self::CreateRole,
            "DROP ROLE" => Self::DropRole,
            "PROXY" => Self::Proxy,
            "GRANT OPTION" => Self::GrantOption,
            _ => Self::Other(name),
        }
    }

    /// The name as `GRANT` takes it.
    pub fn name(&self) -> &str {
        match self {
            Self::All => "ALL PRIVILEGES",
            Self::Usage => "USAGE",
            Self::Select => "SELECT",
            Self::Insert => "INSERT",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Create => "CREATE",
            Self::Drop => "DROP",
            Self::Reload => "RELOAD",
            Self::Shutdown => "SHUTDOWN",
            Self::Process => "PROCESS",
            Self::File => "FILE",
            Self::References => "REFERENCES",
            Self::Index => "INDEX",
            Self::Alter => "ALTER",
            Self::ShowDatabases => "SHOW DATABASES",
            Self::Super => "SUPER",
            Self::CreateTemporaryTables => "CREATE TEMPORARY TABLES",
            Self::LockTables => "LOCK TABLES",
            Self::Execute => "EXECUTE",
            Self::ReplicationSlave => "REPLICATION SLAVE",
            Self::ReplicationClient => "REPLICATION CLIENT",
            Self::BinlogMonitor => "BINLOG MONITOR",
            Self::CreateView => "CREATE VIEW",
            Self::ShowView => "SHOW VIEW",
            Self::CreateRoutine => "CREATE ROUTINE",
            Self::AlterRoutine => "ALTER ROUTINE",
            Self::CreateUser => "CREATE USER",
            Self::Event => "EVENT",
            Self::Trigger => "TRIGGER",
            Self::CreateTablespace => "CREATE TABLESPACE",
            Self::DeleteHistory => "DELETE HISTORY",
            Self::SetUser => "SET USER",
            Self::FederatedAdmin => "FEDERATED ADMIN",
            Self::ConnectionAdmin => "CONNECTION ADMIN",
            Self::ReadOnlyAdmin => "READ_ONLY ADMIN",
            Self::ReplicationSlaveAdmin => "REPLICATION SLAVE ADMIN",
            Self::ReplicationMasterAdmin => "REPLICATION MASTER ADMIN",
            Self::BinlogAdmin => "BINLOG ADMIN",
            Self::BinlogReplay => "BINLOG REPLAY",
            Self::SlaveMonitor => "SLAVE MONITOR",
            Self::ShowCreateRoutine => "SHOW CREATE ROUTINE",
            Self::CreateRole => "CREATE ROLE",
            Self::DropRole => "DROP ROLE",
            Self::Proxy => "PROXY",
            Self::GrantOption => "GRANT OPTION",
            Self::Other(name) => name,
        }
    }

    /// Whether a grant of `ALL PRIVILEGES` includes this one.
    fn in_all(&self) -> bool {
        !matches!(self, Self::Usage | Self::Proxy | Self::GrantOption)
    }
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A database-level grant's name: `_` and `%` are wildcards unless escaped with `\`, as
/// MariaDB and MySQL write them (`app\_%`), kept as written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DatabasePattern(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatternItem {
    Literal(char),
    One,
    Many,
}

impl DatabasePattern {
    /// A pattern as `SHOW GRANTS` writes it (unquoted).
    pub fn new(pattern: impl Into<String>) -> Self {
        Self(pattern.into())
    }

    /// The pattern as written, escapes included.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn items(&self) -> Vec<PatternItem> {
        let mut items = Vec::new();
        let mut chars = self.0.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(escaped) => items.push(PatternItem::Literal(escaped)),
                    None => items.push(PatternItem::Literal('\\')),
                },
                '_' => items.push(PatternItem::One),
                '%' => items.push(PatternItem::Many),
                c => items.push(PatternItem::Literal(c)),
            }
        }
        items
    }

    /// Whether the pattern holds no wildcard (it names one database).
    pub fn is_exact(&self) -> bool {
        !self
            .items()
            .iter()
            .any(|i| matches!(i, PatternItem::One | PatternItem::Many))
    }

    /// Whether the pattern matches the database `name`.
    pub fn matches(&self, name: &str) -> bool {
        let pattern = self.items();
        let text: Vec<char> = name.chars().collect();
        // Iterative wildcard matching: on a mismatch, let the last `%` take one more character.
        let (mut p, mut t) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match pattern.get(p) {
                Some(PatternItem::Many) => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(PatternItem::One) => {
                    p += 1;
                    t += 1;
                }
                Some(PatternItem::Literal(c)) if *c == text[t] => {
                    p += 1;
                    t += 1;
                }
                _ => match star {
                    Some((star_p, star_t)) => {
                        p = star_p + 1;
                        t = star_t + 1;
                        star = Some((star_p, star_t + 1));
                    }
                    None => return false,
                },
            }
        }
        pattern[p.min(pattern.len())..]
            .iter()
            .all(|i| *i == PatternItem::Many)
    }
}

impl fmt::Display for DatabasePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&display_name(&self.0))
    }
}

/// The kind of stored program a routine-level grant names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RoutineKind {
    /// `ON PROCEDURE db.name`.
    Procedure,
    /// `ON FUNCTION db.name`.
    Function,
    /// `ON PACKAGE db.name` (MariaDB, Oracle mode).
    Package,
    /// `ON PACKAGE BODY db.name` (MariaDB, Oracle mode).
    PackageBody,
}

/// What a grant applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `*.*`: the whole server.
    Global,
    /// `db.*`: every database the pattern matches.
    Database(DatabasePattern),
    /// `db.tbl` (or `TABLE db.tbl`): one table or view.
    Table {
        /// Database name.
        database: String,
        /// Table name.
        table: String,
    },
    /// `PROCEDURE db.p`, `FUNCTION db.f`, `PACKAGE [BODY] db.p`: one stored program.
    Routine {
        /// Which kind of program.
        kind: RoutineKind,
        /// Database name.
        database: String,
        /// Program name.
        name: String,
    },
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Global => f.write_str("*.*"),
            Self::Database(pattern) => write!(f, "{pattern}.*"),
            Self::Table { database, table } => {
                write!(f, "{}.{}", display_name(database), display_name(table))
            }
            Self::Routine {
                kind,
                database,
                name,
            } => {
                let kind = match kind {
                    RoutineKind::Procedure => "PROCEDURE",
                    RoutineKind::Function => "FUNCTION",
                    RoutineKind::Package => "PACKAGE",
                    RoutineKind::PackageBody => "PACKAGE BODY",
                };
                write!(
                    f,
                    "{kind} {}.{}",
                    display_name(database),
                    display_name(name)
                )
            }
        }
    }
}

/// Who holds a grant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grantee {
    /// An account, `user@host` (in MySQL, roles too).
    Account {
        /// User name (empty for the anonymous user).
        user: String,
        /// Host name or pattern.
        host: String,
    },
    /// A MariaDB role (written without a host).
    Role(String),
    /// `PUBLIC`: every account (MariaDB 10.11 and later).
    Public,
}

impl fmt::Display for Grantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Account { user, host } => write!(f, "{user}@{host}"),
            Self::Role(role) => f.write_str(role),
            Self::Public => f.write_str("PUBLIC"),
        }
    }
}

/// A grant of privileges on a level: `GRANT privileges ON level TO grantee`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Privileges on the whole level.
    pub privileges: BTreeSet<Privilege>,
    /// Privileges on some columns only (`SELECT (a, b)`), which are not privileges on the
    /// whole table.
    pub column_privileges: BTreeMap<Privilege, BTreeSet<String>>,
    /// What the privileges apply to.
    pub level: Level,
    /// Who holds them.
    pub grantee: Grantee,
    /// `WITH GRANT OPTION`.
    pub grant_option: bool,
}

impl Grant {
    /// Whether the grant gives `privilege` on its whole level (`ALL PRIVILEGES` included).
    pub fn gives(&self, privilege: &Privilege) -> bool {
        self.privileges.contains(privilege)
            || (privilege.in_all() && self.privileges.contains(&Privilege::All))
    }
}

/// One line of `SHOW GRANTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// Privileges on a level.
    Privileges(Grant),
    /// `GRANT role[, role] TO grantee`: membership, not privileges (the role's privileges are
    /// listed on lines of their own while it is active).
    Role {
        /// The roles granted.
        roles: Vec<Grantee>,
        /// Who holds them.
        grantee: Grantee,
        /// `WITH ADMIN OPTION`.
        admin_option: bool,
    },
    /// `GRANT PROXY ON account TO grantee`: may log in as another account; no privilege here.
    Proxy {
        /// The account that may be proxied.
        proxied: Grantee,
        /// Who may proxy it.
        grantee: Grantee,
        /// `WITH GRANT OPTION`.
        grant_option: bool,
    },
    /// MySQL's partial revoke, `REVOKE privileges ON db.* FROM grantee`: global privileges taken
    /// back on one database.
    Revoke(Grant),
    /// Anything else (`SET DEFAULT ROLE …`): no privilege.
    Other,
}

/// Parses one line of `SHOW GRANTS`.
///
/// Lines that do not start with `GRANT` or `REVOKE` are [`Statement::Other`]. A `GRANT` line that
/// does not parse is a [`crate::ErrorKind::Database`] error naming where it stops making sense;
/// the message never quotes what follows the grantee (a password hash may be there).
pub fn parse_line(line: &str) -> Result<Statement> {
    parse(line).map_err(|why| {
        let shown = redacted(line);
        Error::database(format!("cannot read the grant `{shown}`: {why}"))
    })
}

/// The line up to its `IDENTIFIED` clause, at most 200 characters.
fn redacted(line: &str) -> String {
    let upper = line.to_ascii_uppercase();
    let end = upper.find(" IDENTIFIED").unwrap_or(line.len());
    let mut shown: String = line[..end].chars().take(200).collect();
    if shown.len() < line.len() {
        shown.push('…');
    }
    shown
}

fn parse(line: &str) -> std::result::Result<Statement, String> {
    let tokens = tokenize(line)?;
    let mut p = Parser { tokens, at: 0 };
    let revoke = if p.eat_word("GRANT") {
        false
    } else if p.eat_word("REVOKE") {
        true
    } else {
        return Ok(Statement::Other);
    };
    // A role list starts with a quoted name; privilege names are never quoted.
    if !revoke && matches!(p.peek(), Some(Token::Quoted(..))) {
        let roles = p.grantee_list("TO")?;
        let grantee = p.grantee()?;
        let admin_option = p.tail_has("ADMIN", "OPTION");
        return Ok(Statement::Role {
            roles,
            grantee,
            admin_option,
        });
    }
    let mut privileges = BTreeSet::new();
    let mut column_privileges: BTreeMap<Privilege, BTreeSet<String>> = BTreeMap::new();
    let mut bare_names = Vec::new();
    let ends_with_to = loop {
        let mut words = Vec::new();
        while let Some(Token::Word(w)) = p.peek() {
            if w.eq_ignore_ascii_case("ON") || w.eq_ignore_ascii_case("TO") {
                break;
            }
            words.push(w.clone());
            p.at += 1;
        }
        if words.is_empty() {
            return Err(format!("expected a privilege name {}", p.where_()));
        }
        let privilege = Privilege::from_name(&words.join(" "));
        if p.eat_punct('(') {
            let columns = p.column_list()?;
            column_privileges
                .entry(privilege)
                .or_default()
                .extend(columns);
        } else {
            bare_names.push(words.join(" "));
            privileges.insert(privilege);
        }
        if p.eat_punct(',') {
            continue;
        }
        if p.eat_word("ON") {
            break false;
        }
        if !revoke && p.eat_word("TO") {
            break true;
        }
        return Err(format!("expected `,` or ON {}", p.where_()));
    };
    if ends_with_to {
        // `GRANT r1, r2 TO …` with unquoted role names.
        if !column_privileges.is_empty() || bare_names.iter().any(|n| n.contains(' ')) {
            return Err("expected ON after the privileges".into());
        }
        let grantee = p.grantee()?;
        return Ok(Statement::Role {
            roles: bare_names.into_iter().map(Grantee::Role).collect(),
            grantee,
            admin_option: p.tail_has("ADMIN", "OPTION"),
        });
    }
    if !revoke
        && column_privileges.is_empty()
        && privileges.len() == 1
        && privileges.contains(&Privilege::Proxy)
    {
        let proxied = p.grantee()?;
        if !p.eat_word("TO") {
            return Err(format!("expected TO {}", p.where_()));
        }
        let grantee = p.grantee()?;
        return Ok(Statement::Proxy {
            proxied,
            grantee,
            grant_option: p.tail_has("GRANT", "OPTION"),
        });
    }
    let level = p.level()?;
    if !p.eat_word(if revoke { "FROM" } else { "TO" }) {
        return Err(format!(
            "expected {} {}",
            if revoke { "FROM" } else { "TO" },
            p.where_()
        ));
    }
    let grantee = p.grantee()?;
    let grant = Grant {
        grant_option: p.tail_has("GRANT", "OPTION"),
        privileges,
        column_privileges,
        level,
        grantee,
    };
    Ok(if revoke {
        Statement::Revoke(grant)
    } else {
        Statement::Privileges(grant)
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An unquoted run of characters.
    Word(String),
    /// A quoted name or string, unescaped, with its quote character.
    Quoted(String, char),
    /// One of `* . , ( ) @`.
    Punct(char),
}

const PUNCTUATION: &[char] = &['*', '.', ',', '(', ')', '@'];

fn tokenize(line: &str) -> std::result::Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if PUNCTUATION.contains(&c) {
            chars.next();
            tokens.push(Token::Punct(c));
        } else if c == '`' || c == '\'' || c == '"' {
            chars.next();
            let mut text = String::new();
            loop {
                match chars.next() {
                    None => return Err(format!("a {c}quoted{c} name is not closed")),
                    // A doubled quote stands for itself.
                    Some(q) if q == c => {
                        if chars.peek() == Some(&c) {
                            chars.next();
                            text.push(c);
                        } else {
                            break;
                        }
                    }
                    // Strings (not backtick names) take backslash escapes.
                    Some('\\') if c != '`' => match chars.next() {
                        None => return Err(format!("a {c}quoted{c} name is not closed")),
                        Some(e) => text.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            '0' => '\0',
                            'Z' => '\u{1a}',
                            'b' => '\u{8}',
                            other => other,
                        }),
                    },
                    Some(other) => text.push(other),
                }
            }
            tokens.push(Token::Quoted(text, c));
        } else {
            let mut word = String::new();
            while let Some(&w) = chars.peek() {
                if w.is_whitespace() || PUNCTUATION.contains(&w) || matches!(w, '`' | '\'' | '"') {
                    break;
                }
                word.push(w);
                chars.next();
            }
            tokens.push(Token::Word(word));
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn peek_at(&self, offset: usize) -> Option<&Token> {
        self.tokens.get(self.at + offset)
    }

    fn where_(&self) -> String {
        match self.peek() {
            None => "at the end".into(),
            Some(Token::Word(w)) => format!("before `{}`", w.chars().take(40).collect::<String>()),
            Some(Token::Quoted(..)) => "before a quoted name".into(),
            Some(Token::Punct(c)) => format!("before `{c}`"),
        }
    }

    fn eat_word(&mut self, keyword: &str) -> bool {
        match self.peek() {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword) => {
                self.at += 1;
                true
            }
            _ => false,
        }
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if self.peek() == Some(&Token::Punct(c)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// A name: quoted, or one unquoted word.
    fn name(&mut self) -> std::result::Result<String, String> {
        match self.peek() {
            Some(Token::Quoted(text, _)) | Some(Token::Word(text)) => {
                let text = text.clone();
                self.at += 1;
                Ok(text)
            }
            _ => Err(format!("expected a name {}", self.where_())),
        }
    }

    /// `(a, b, …)` after its opening parenthesis.
    fn column_list(&mut self) -> std::result::Result<Vec<String>, String> {
        let mut columns = vec![self.name()?];
        loop {
            if self.eat_punct(')') {
                return Ok(columns);
            }
            if !self.eat_punct(',') {
                return Err(format!(
                    "expected `,` or `)` in a column list {}",
                    self.where_()
                ));
            }
            columns.push(self.name()?);
        }
    }

    /// What follows `ON`.
    fn level(&mut self) -> std::result::Result<Level, String> {
        // An object type, unless the word is itself a database name (`function.*`).
        let word = match (self.peek(), self.peek_at(1)) {
            (Some(Token::Word(w)), next) if next != Some(&Token::Punct('.')) => {
                Some(w.to_ascii_uppercase())
            }
            _ => None,
        };
        let body_follows = matches!(self.peek_at(1), Some(Token::Word(b)) if b.eq_ignore_ascii_case("BODY"))
            && self.peek_at(2) != Some(&Token::Punct('.'));
        let kind = match word.as_deref() {
            Some("TABLE") => Some(None),
            Some("PROCEDURE") => Some(Some(RoutineKind::Procedure)),
            Some("FUNCTION") => Some(Some(RoutineKind::Function)),
            Some("PACKAGE") if body_follows => {
                self.at += 1;
                Some(Some(RoutineKind::PackageBody))
            }
            Some("PACKAGE") => Some(Some(RoutineKind::Package)),
            _ => None,
        };
        if kind.is_some() {
            self.at += 1;
        }
        if self.eat_punct('*') {
            if !self.eat_punct('.') || !self.eat_punct('*') {
                return Err(format!(
                    "expected `*.*` (grants on the current database are not listed) {}",
                    self.where_()
                ));
            }
            return match kind {
                None | Some(None) => Ok(Level::Global),
                Some(Some(_)) => Err("a routine grant names one routine, not `*.*`".into()),
            };
        }
        let database = self.name()?;
        if !self.eat_punct('.') {
            return Err(format!("expected `.` after the database {}", self.where_()));
        }
        if self.eat_punct('*') {
            return match kind {
                None => Ok(Level::Database(DatabasePattern::new(database))),
                Some(_) => Err("an object grant names one object, not `db.*`".into()),
            };
        }
        let name = self.name()?;
        Ok(match kind {
            None | Some(None) => Level::Table {
                database,
                table: name,
            },
            Some(Some(kind)) => Level::Routine {
                kind,
                database,
                name,
            },
        })
    }

    /// An account (`user@host`), a role (`name`) or `PUBLIC`.
    fn grantee(&mut self) -> std::result::Result<Grantee, String> {
        let unquoted_public =
            matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case("PUBLIC"));
        let user = self.name()?;
        if self.eat_punct('@') {
            let host = self.name()?;
            return Ok(Grantee::Account { user, host });
        }
        Ok(if unquoted_public {
            Grantee::Public
        } else {
            Grantee::Role(user)
        })
    }

    /// Grantees separated by commas, up to the keyword `end`.
    fn grantee_list(&mut self, end: &str) -> std::result::Result<Vec<Grantee>, String> {
        let mut list = vec![self.grantee()?];
        loop {
            if self.eat_word(end) {
                return Ok(list);
            }
            if !self.eat_punct(',') {
                return Err(format!("expected `,` or {end} {}", self.where_()));
            }
            list.push(self.grantee()?);
        }
    }

    /// Whether the rest of the line holds the two keywords one after the other (outside quotes).
    fn tail_has(&self, first: &str, second: &str) -> bool {
        self.tokens[self.at.min(self.tokens.len())..]
            .windows(2)
            .any(|pair| match pair {
                [Token::Word(a), Token::Word(b)] => {
                    a.eq_ignore_ascii_case(first) && b.eq_ignore_ascii_case(second)
                }
                _ => false,
            })
    }
}

/// A name as messages show it: bare when it is a plain identifier, else in backticks.
fn display_name(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '\\' || c == '%');
    if plain {
        name.to_string()
    } else {
        format!("`{}`", name.replace('`', "``"))
    }
}

/// Which of a grantee's roles a line belongs to, for adding up database grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Holder {
    Account,
    Roles,
    Public,
}

fn holder(grantee: &Grantee) -> Holder {
    match grantee {
        Grantee::Account { .. } => Holder::Account,
        // The active role and the roles granted to it act as one (the server merges them).
        Grantee::Role(_) => Holder::Roles,
        Grantee::Public => Holder::Public,
    }
}

/// The parsed `SHOW GRANTS` of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    /// The account the session authenticated as (`CURRENT_USER()`), for messages.
    pub account: String,
    /// Every line, in order.
    pub statements: Vec<Statement>,
}

impl Grants {
    /// Parses the lines of `SHOW GRANTS` for `account`; the first line that does not parse is an
    /// error.
    pub fn parse<S: AsRef<str>>(account: &str, lines: &[S]) -> Result<Grants> {
        let statements = lines
            .iter()
            .map(|l| parse_line(l.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Grants {
            account: account.to_string(),
            statements,
        })
    }

    fn grants(&self) -> impl Iterator<Item = &Grant> {
        self.statements.iter().filter_map(|s| match s {
            Statement::Privileges(g) => Some(g),
            _ => None,
        })
    }

    fn revoked_on(&self, privilege: &Privilege, database: &str) -> bool {
        self.statements.iter().any(|s| match s {
            Statement::Revoke(g) => {
                matches!(&g.level, Level::Database(p) if p.matches(database)) && g.gives(privilege)
            }
            _ => false,
        })
    }

    /// Whether `privilege` is granted on `*.*`.
    pub fn has_global(&self, privilege: &Privilege) -> bool {
        self.grants()
            .any(|g| g.level == Level::Global && g.gives(privilege))
    }

    /// Whether `privilege` applies to all of database `database`: granted on `*.*` (and not
    /// revoked there), or by the database grant that the server picks for it.
    pub fn has_on_database(&self, privilege: &Privilege, database: &str) -> bool {
        if self.has_global(privilege) && !self.revoked_on(privilege, database) {
            return true;
        }
        [Holder::Account, Holder::Roles, Holder::Public]
            .into_iter()
            .any(|h| self.database_grant_gives(h, privilege, database))
    }

    /// Whether the database-level grants of `h` certainly give `privilege` on `database`: the
    /// grant naming it without wildcards if there is one (it always wins), else every matching
    /// pattern's (the server applies one of them).
    fn database_grant_gives(&self, h: Holder, privilege: &Privilege, database: &str) -> bool {
        // Pattern -> whether the grants on exactly that pattern give it (a role and the roles
        // granted to it are merged pattern by pattern, as the server does).
        let mut matching: BTreeMap<&DatabasePattern, bool> = BTreeMap::new();
        for g in self.grants().filter(|g| holder(&g.grantee) == h) {
            if let Level::Database(pattern) = &g.level
                && pattern.matches(database)
            {
                *matching.entry(pattern).or_default() |= g.gives(privilege);
            }
        }
        if matching.is_empty() {
            return false;
        }
        let exact: Vec<bool> = matching
            .iter()
            .filter(|(p, _)| p.is_exact())
            .map(|(_, gives)| *gives)
            .collect();
        if !exact.is_empty() {
            return exact.into_iter().any(|gives| gives);
        }
        matching.values().all(|gives| *gives)
    }

    /// Whether `privilege` applies to the whole of table `database.table`.
    pub fn has_on_table(&self, privilege: &Privilege, database: &str, table: &str) -> bool {
        self.has_on_database(privilege, database)
            || self.grants().any(|g| {
                matches!(&g.level, Level::Table { database: d, table: t } if d == database && t == table)
                    && g.gives(privilege)
            })
    }

    /// What a full backup of `databases` needs that these grants lack, by what `mariadb-dump
    /// --single-transaction --routines --triggers --events` does with them (measured on
    /// MariaDB 10.11):
    ///
    /// - tables: `SELECT` on the database (a table without it is left out of `SHOW TABLES`, or
    ///   the dump stops);
    /// - views: `SHOW VIEW` (without it the dump stops at the first view);
    /// - triggers: `TRIGGER` (without it they are left out silently);
    /// - routines: `SELECT` on `mysql.proc` (granted on `*.*`, `mysql.*` or the table itself), or
    ///   `SHOW CREATE ROUTINE` on the database on MariaDB 11.3 and later (without it they are left
    ///   out silently, `SUPER` does not help);
    /// - events: `EVENT` (without it the dump stops);
    /// - `LOCK TABLES` on the database, and on `*.*` `RELOAD`, plus `BINLOG MONITOR` (or
    ///   `REPLICATION CLIENT` or `SUPER`) and `REPLICATION SLAVE` when the binary log is on (for
    ///   coordinates and incremental backups).
    ///
    /// A database-level privilege counts when granted on `*.*` or on the database (a pattern
    /// that matches it, resolved as the server does); table-level grants do not (the account
    /// could not know which tables it misses).
    pub fn backup_privileges(&self, databases: &[String], log_bin: bool) -> BackupPrivileges {
        let mut missing = Vec::new();
        let lock: Vec<&String> = databases
            .iter()
            .filter(|d| !self.has_on_database(&Privilege::LockTables, d))
            .collect();
        if !lock.is_empty() {
            let on: Vec<String> = lock
                .iter()
                .map(|d| format!("{}.*", display_name(d)))
                .collect();
            missing.push(format!("LOCK TABLES (on {} or *.*)", on.join(", ")));
        }
        if !self.has_global(&Privilege::Reload) {
            missing.push("RELOAD".to_string());
        }
        if log_bin
            && ![
                Privilege::BinlogMonitor,
                Privilege::ReplicationClient,
                Privilege::Super,
            ]
            .iter()
            .any(|p| self.has_global(p))
        {
            missing.push("BINLOG MONITOR".to_string());
        }
        if log_bin && !self.has_global(&Privilege::ReplicationSlave) {
            missing.push("REPLICATION SLAVE".to_string());
        }

        let mut unseen = Vec::new();
        for database in databases {
            let on_database = |privilege: Privilege, objects: ObjectKind| {
                (!self.has_on_database(&privilege, database)).then(|| Unseen {
                    database: database.clone(),
                    objects,
                    needs: format!("{privilege} on {}.* or *.*", display_name(database)),
                })
            };
            unseen.extend(on_database(Privilege::Select, ObjectKind::Tables));
            unseen.extend(on_database(Privilege::ShowView, ObjectKind::Views));
            unseen.extend(on_database(Privilege::Trigger, ObjectKind::Triggers));
            if !(self.has_on_table(&Privilege::Select, "mysql", "proc")
                || self.has_on_database(&Privilege::ShowCreateRoutine, database))
            {
                unseen.push(Unseen {
                    database: database.clone(),
                    objects: ObjectKind::Routines,
                    needs: "SELECT on *.* or on mysql.proc".to_string(),
                });
            }
            unseen.extend(on_database(Privilege::Event, ObjectKind::Events));
        }
        BackupPrivileges { missing, unseen }
    }
}

/// A kind of object a dump reads from a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    /// Base tables and their rows.
    Tables,
    /// Views.
    Views,
    /// Triggers.
    Triggers,
    /// Stored procedures and functions.
    Routines,
    /// Scheduled events.
    Events,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tables => "tables",
            Self::Views => "views",
            Self::Triggers => "triggers",
            Self::Routines => "routines",
            Self::Events => "events",
        })
    }
}

/// Objects of a database the account cannot see, so a dump would leave them out or fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unseen {
    /// The database.
    pub database: String,
    /// What it cannot see.
    pub objects: ObjectKind,
    /// What would let it (`TRIGGER on app.* or *.*`).
    pub needs: String,
}

impl fmt::Display for Unseen {
    /// `triggers of app (needs TRIGGER on app.* or *.*)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} (needs {})",
            self.objects,
            display_name(&self.database),
            self.needs
        )
    }
}

/// What a full backup needs that an account lacks ([`Grants::backup_privileges`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupPrivileges {
    /// Privileges the backup jobs need that do not decide what the dump sees (`RELOAD`,
    /// `BINLOG MONITOR`, …), each named as `GRANT` takes it.
    pub missing: Vec<String>,
    /// What the dump would not see, database by database.
    pub unseen: Vec<Unseen>,
}

impl BackupPrivileges {
    /// Whether nothing is lacking.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unseen.is_empty()
    }

    /// The unseen objects as one phrase: `triggers of app (needs …), routines of app (needs …)`.
    pub fn unseen_text(&self) -> String {
        self.unseen
            .iter()
            .map(Unseen::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(line: &str) -> Grant {
        match parse_line(line).unwrap() {
            Statement::Privileges(g) => g,
            other => panic!("not a privilege grant: {other:?}"),
        }
    }

    fn grants(lines: &[&str]) -> Grants {
        Grants::parse("coffer_backup@%", lines).unwrap()
    }

    fn set(privileges: &[Privilege]) -> BTreeSet<Privilege> {
        privileges.iter().cloned().collect()
    }

    const FULL: &str = "GRANT SELECT, RELOAD, LOCK TABLES, BINLOG MONITOR, REPLICATION SLAVE, SHOW VIEW, EVENT, TRIGGER ON *.* TO `coffer_backup`@`%` IDENTIFIED BY PASSWORD '*D821809F681A40A6E379B50D0463EFAE20BDD122'";

    #[test]
    fn replication_slave_admin_is_not_replication_slave() {
        let g = grants(&[
            "GRANT SELECT, RELOAD, LOCK TABLES, SHOW VIEW, EVENT, TRIGGER, REPLICATION SLAVE ADMIN, BINLOG MONITOR ON *.* TO `coffer_backup`@`%`",
        ]);
        assert!(g.has_global(&Privilege::ReplicationSlaveAdmin));
        assert!(!g.has_global(&Privilege::ReplicationSlave));
        let report = g.backup_privileges(&["app".into()], true);
        assert_eq!(report.missing, vec!["REPLICATION SLAVE"]);
        assert!(report.unseen.is_empty());
    }

    #[test]
    fn an_account_named_np_select_has_no_select() {
        let g = grants(&[
            "GRANT USAGE ON *.* TO `np_select`@`%`",
            "GRANT RELOAD ON *.* TO `np_select`@`select.example` WITH GRANT OPTION",
        ]);
        assert!(!g.has_global(&Privilege::Select));
        assert!(!g.has_on_database(&Privilege::Select, "app"));
        let report = g.backup_privileges(&["app".into()], false);
        assert!(
            report
                .unseen
                .iter()
                .any(|u| u.objects == ObjectKind::Tables)
        );
    }

    #[test]
    fn a_database_named_like_a_privilege_gives_nothing_elsewhere() {
        let g = grants(&["GRANT SELECT ON `TRIGGER`.* TO `b`@`%`"]);
        assert!(!g.has_on_database(&Privilege::Trigger, "app"));
        assert!(g.has_on_database(&Privilege::Select, "TRIGGER"));
        assert!(!g.has_on_database(&Privilege::Select, "trigger"));
    }

    #[test]
    fn the_full_backup_grants_see_everything() {
        let g = grants(&[FULL]);
        assert!(
            g.backup_privileges(&["app".into(), "bulk".into()], true)
                .is_empty()
        );
        let all = grants(&["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION"]);
        assert!(all.backup_privileges(&["app".into()], true).is_empty());
        assert!(all.has_global(&Privilege::ReplicationSlave));
        assert!(!all.has_global(&Privilege::Proxy));
    }

    #[test]
    fn privilege_lists_and_levels_are_typed() {
        let g = grant(
            "GRANT SELECT (`c o``l`, `id`), INSERT (`b`), UPDATE ON `we``ird db`.`t``x` TO `o'brien\"x`@`%`",
        );
        assert_eq!(
            g.level,
            Level::Table {
                database: "we`ird db".into(),
                table: "t`x".into()
            }
        );
        assert_eq!(g.privileges, set(&[Privilege::Update]));
        assert_eq!(
            g.column_privileges[&Privilege::Select],
            ["c o`l".to_string(), "id".to_string()]
                .into_iter()
                .collect()
        );
        assert_eq!(
            g.grantee,
            Grantee::Account {
                user: "o'brien\"x".into(),
                host: "%".into()
            }
        );
        assert!(
            !g.gives(&Privilege::Select),
            "a column grant is not the table's"
        );

        let g = grant(
            "GRANT REPLICATION SLAVE ADMIN, BINLOG ADMIN, SLAVE MONITOR ON *.* TO `u`@`%` IDENTIFIED BY PASSWORD '*D8' WITH MAX_QUERIES_PER_HOUR 10",
        );
        assert_eq!(
            g.privileges,
            set(&[
                Privilege::ReplicationSlaveAdmin,
                Privilege::BinlogAdmin,
                Privilege::SlaveMonitor
            ])
        );
        assert!(!g.grant_option);

        let g = grant("GRANT EXECUTE ON FUNCTION `app`.`net_amount` TO `u`@`%` WITH GRANT OPTION");
        assert_eq!(
            g.level,
            Level::Routine {
                kind: RoutineKind::Function,
                database: "app".into(),
                name: "net_amount".into()
            }
        );
        assert!(g.grant_option);
        let g = grant("GRANT EXECUTE, ALTER ROUTINE ON PROCEDURE `app`.`close_overdue` TO `u`@`%`");
        assert!(matches!(
            g.level,
            Level::Routine {
                kind: RoutineKind::Procedure,
                ..
            }
        ));
        let g = grant("GRANT EXECUTE ON PACKAGE BODY `app`.`pkg` TO `u`@`%`");
        assert!(matches!(
            g.level,
            Level::Routine {
                kind: RoutineKind::PackageBody,
                ..
            }
        ));
        // A database that happens to be called `function`.
        let g = grant("GRANT SELECT ON function.* TO u@'%'");
        assert_eq!(g.level, Level::Database(DatabasePattern::new("function")));
        let g = grant("GRANT SELECT ON TABLE `app`.`users` TO `u`@`%`");
        assert!(matches!(g.level, Level::Table { .. }));
        // MySQL's style: single quotes, dynamic privileges without spaces after commas.
        let g =
            grant("GRANT BACKUP_ADMIN,REPLICATION_SLAVE_ADMIN ON *.* TO 'u'@'%' WITH GRANT OPTION");
        assert_eq!(
            g.privileges,
            set(&[
                Privilege::Other("BACKUP_ADMIN".into()),
                Privilege::Other("REPLICATION_SLAVE_ADMIN".into())
            ])
        );
        assert!(grant("GRANT ALL ON `app`.* TO `u`@`%`").gives(&Privilege::Trigger));
        assert!(
            grant("grant replication replica on *.* to u@h").gives(&Privilege::ReplicationSlave)
        );
    }

    #[test]
    fn roles_proxies_and_other_lines_are_not_privileges() {
        assert_eq!(
            parse_line("GRANT `backup_role` TO `o'brien\"x`@`%` WITH ADMIN OPTION").unwrap(),
            Statement::Role {
                roles: vec![Grantee::Role("backup_role".into())],
                grantee: Grantee::Account {
                    user: "o'brien\"x".into(),
                    host: "%".into()
                },
                admin_option: true
            }
        );
        // A role named like a privilege.
        assert!(matches!(
            parse_line("GRANT `SELECT` TO `u`@`%`").unwrap(),
            Statement::Role { .. }
        ));
        // MySQL: roles are accounts.
        assert!(matches!(
            parse_line("GRANT `r1`@`%`,`r2`@`%` TO `u`@`%`").unwrap(),
            Statement::Role { roles, .. } if roles.len() == 2
        ));
        assert_eq!(
            parse_line("GRANT PROXY ON ``@`%` TO `o'brien\"x`@`%` WITH GRANT OPTION").unwrap(),
            Statement::Proxy {
                proxied: Grantee::Account {
                    user: String::new(),
                    host: "%".into()
                },
                grantee: Grantee::Account {
                    user: "o'brien\"x".into(),
                    host: "%".into()
                },
                grant_option: true
            }
        );
        assert_eq!(
            parse_line("GRANT PROXY ON ''@'' TO 'root'@'localhost' WITH GRANT OPTION").unwrap(),
            Statement::Proxy {
                proxied: Grantee::Account {
                    user: String::new(),
                    host: String::new()
                },
                grantee: Grantee::Account {
                    user: "root".into(),
                    host: "localhost".into()
                },
                grant_option: true
            }
        );
        assert_eq!(
            parse_line("SET DEFAULT ROLE `backup_role` FOR `u`@`%`").unwrap(),
            Statement::Other
        );
        let g = grants(&[
            "GRANT `all_role` TO `u`@`%`",
            "GRANT PROXY ON `root`@`localhost` TO `u`@`%`",
        ]);
        assert!(!g.has_global(&Privilege::Select));
        assert!(!g.has_global(&Privilege::All));
    }

    #[test]
    fn an_active_roles_and_public_grants_count() {
        let g = grants(&[
            "GRANT `backup_role` TO `u`@`%`",
            "GRANT RELOAD ON *.* TO `u`@`%`",
            "GRANT `inner_role` TO `backup_role`",
            "GRANT SELECT, SHOW VIEW, TRIGGER, LOCK TABLES ON *.* TO `backup_role`",
            "GRANT EVENT ON `app`.* TO `inner_role`",
            "GRANT SHOW VIEW ON `app`.* TO PUBLIC",
            "SET DEFAULT ROLE `backup_role` FOR `u`@`%`",
        ]);
        assert!(g.backup_privileges(&["app".into()], false).is_empty());
        let report = g.backup_privileges(&["app".into(), "bulk".into()], false);
        assert_eq!(
            report.unseen_text(),
            "events of bulk (needs EVENT on bulk.* or *.*)"
        );
    }

    #[test]
    fn database_patterns_resolve_as_the_server_does() {
        let p = DatabasePattern::new(r"app\_%");
        assert!(p.matches("app_x") && p.matches("app_"));
        assert!(!p.matches("appx") && !p.matches("app"));
        assert!(DatabasePattern::new("a_p").matches("aXp"));
        assert!(DatabasePattern::new("%").matches(""));
        assert!(DatabasePattern::new("%a%b").matches("xxaxxb"));
        assert!(!DatabasePattern::new("%a%b").matches("xxaxxbc"));
        assert!(!DatabasePattern::new(r"app\_%").is_exact());
        assert!(DatabasePattern::new(r"app\_x").is_exact());

        // One matching grant applies, not their union (measured on MariaDB 10.11: SELECT via
        // `app\_%` does not reach app_x once `app_x` has a grant of its own).
        let g = grants(&[
            r"GRANT SELECT, TRIGGER ON `app\_%`.* TO `u`@`%`",
            "GRANT TRIGGER ON `app_x`.* TO `u`@`%`",
        ]);
        assert!(g.has_on_database(&Privilege::Select, "app_y"));
        assert!(!g.has_on_database(&Privilege::Select, "app_x"));
        assert!(g.has_on_database(&Privilege::Trigger, "app_x"));
        assert!(!g.has_on_database(&Privilege::Select, "appx"));
        // A grant naming the database without wildcards wins (measured: `app\_x` over `app_x`).
        let g = grants(&[
            r"GRANT SELECT ON `app\_x`.* TO `u`@`%`",
            "GRANT TRIGGER ON `app_x`.* TO `u`@`%`",
        ]);
        assert!(g.has_on_database(&Privilege::Select, "app_x"));
        assert!(!g.has_on_database(&Privilege::Trigger, "app_x"));
        // Between patterns only what both give counts: the server gives SELECT only here
        // (measured: `ap__x` wins over `app%`), and no TRIGGER is claimed.
        let g = grants(&[
            "GRANT SELECT, LOCK TABLES ON `ap__x`.* TO `u`@`%`",
            "GRANT TRIGGER, LOCK TABLES ON `app%`.* TO `u`@`%`",
        ]);
        assert!(!g.has_on_database(&Privilege::Trigger, "app_x"));
        assert!(g.has_on_database(&Privilege::LockTables, "app_x"));
        // The user's, a role's and PUBLIC's grants add up, each resolved on its own (measured).
        let g = grants(&[
            "GRANT TRIGGER ON `app_x`.* TO `u`@`%`",
            r"GRANT SELECT ON `app\_%`.* TO `r`",
            r"GRANT EVENT ON `app\_%`.* TO PUBLIC",
        ]);
        assert!(g.has_on_database(&Privilege::Select, "app_x"));
        assert!(g.has_on_database(&Privilege::Event, "app_x"));
        assert!(g.has_on_database(&Privilege::Trigger, "app_x"));
    }

    #[test]
    fn select_on_one_database_hides_its_routines() {
        let g = grants(&[
            "GRANT RELOAD, BINLOG MONITOR, REPLICATION SLAVE ON *.* TO `u`@`%`",
            "GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON `app`.* TO `u`@`%`",
        ]);
        let report = g.backup_privileges(&["app".into()], true);
        assert!(report.missing.is_empty(), "{report:?}");
        assert_eq!(
            report.unseen_text(),
            "routines of app (needs SELECT on *.* or on mysql.proc)"
        );
        let mut lines = g.statements.clone();
        lines.push(parse_line("GRANT SELECT ON `mysql`.`proc` TO `u`@`%`").unwrap());
        let with_proc = Grants {
            account: "u@%".into(),
            statements: lines,
        };
        assert!(
            with_proc
                .backup_privileges(&["app".into()], true)
                .is_empty()
        );
    }

    #[test]
    fn without_trigger_the_triggers_are_named() {
        let g = grants(&[
            "GRANT SELECT, SHOW VIEW, EVENT, LOCK TABLES, RELOAD, BINLOG MONITOR, REPLICATION SLAVE ON *.* TO `coffer_backup`@`%`",
        ]);
        let report = g.backup_privileges(&["app".into()], true);
        assert_eq!(
            report.unseen_text(),
            "triggers of app (needs TRIGGER on app.* or *.*)"
        );
        let odd = g.backup_privileges(&["inv`o'ice; x".into()], true);
        assert_eq!(
            odd.unseen_text(),
            "triggers of `inv``o'ice; x` (needs TRIGGER on `inv``o'ice; x`.* or *.*)"
        );
    }

    #[test]
    fn missing_global_privileges_are_named() {
        let g = grants(&["GRANT SELECT ON *.* TO `weak`@`%`"]);
        let report = g.backup_privileges(&["app".into()], true);
        assert_eq!(
            report.missing,
            vec![
                "LOCK TABLES (on app.* or *.*)",
                "RELOAD",
                "BINLOG MONITOR",
                "REPLICATION SLAVE"
            ]
        );
        assert_eq!(
            report.unseen_text(),
            "views of app (needs SHOW VIEW on app.* or *.*), triggers of app (needs TRIGGER on app.* or *.*), events of app (needs EVENT on app.* or *.*)"
        );
        let old = grants(&[
            "GRANT SELECT, RELOAD, REPLICATION CLIENT, REPLICATION SLAVE ON *.* TO 'b'@'%'",
        ]);
        assert!(
            !old.backup_privileges(&[], true)
                .missing
                .contains(&"BINLOG MONITOR".to_string())
        );
    }

    #[test]
    fn a_partial_revoke_takes_a_global_privilege_back() {
        let g = grants(&[
            "GRANT SELECT, TRIGGER ON *.* TO `u`@`%`",
            "REVOKE TRIGGER ON `app`.* FROM `u`@`%`",
        ]);
        assert!(!g.has_on_database(&Privilege::Trigger, "app"));
        assert!(g.has_on_database(&Privilege::Trigger, "bulk"));
        assert!(g.has_on_database(&Privilege::Select, "app"));
    }

    #[test]
    fn broken_lines_are_errors_without_secrets() {
        for line in [
            "GRANT SELECT ON",
            "GRANT ON *.* TO u@h",
            "GRANT SELECT ON `app.* TO u@h",
            "GRANT SELECT ON app TO u@h",
            "GRANT SELECT (a ON app.t TO u@h",
            "GRANT SELECT ON *.* u@h",
        ] {
            let err = parse_line(line).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Database, "{line}");
        }
        let err = parse_line("GRANT SELECT ON * TO `u`@`%` IDENTIFIED BY PASSWORD '*SECRETHASH'")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("SECRETHASH"), "{err}");
        assert!(Grants::parse("u", &["GRANT USAGE ON *.* TO u@h", "GRANT"]).is_err());
    }

    mod never_panics {
        use super::super::*;
        use proptest::prelude::*;

        fn token() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("GRANT".to_string()),
                Just("REVOKE".to_string()),
                Just("SELECT".to_string()),
                Just("REPLICATION SLAVE".to_string()),
                Just("ALL PRIVILEGES".to_string()),
                Just("PROXY".to_string()),
                Just("ON".to_string()),
                Just("TO".to_string()),
                Just("FROM".to_string()),
                Just("PROCEDURE".to_string()),
                Just("PACKAGE BODY".to_string()),
                Just("TABLE".to_string()),
                Just("*.*".to_string()),
                Just("*".to_string()),
                Just(".".to_string()),
                Just(",".to_string()),
                Just("(".to_string()),
                Just(")".to_string()),
                Just("@".to_string()),
                Just("WITH GRANT OPTION".to_string()),
                Just("PUBLIC".to_string()),
                "`[^`]{0,6}`?",
                "'[^']{0,6}'?",
                "\"[a-z\\\\]{0,4}\"?",
                "[a-z_%\\\\]{1,6}",
            ]
        }

        proptest! {
            #[test]
            fn the_parser_never_panics_on_any_string(line in any::<String>()) {
                let _ = parse_line(&line);
                let _ = Grants::parse("u", &[line.as_str()]).map(|g| g.backup_privileges(std::slice::from_ref(&line), true));
            }

            #[test]
            fn the_parser_never_panics_on_grant_like_lines(tokens in proptest::collection::vec(token(), 0..14)) {
                let line = tokens.join(" ");
                if let Ok(g) = Grants::parse("u", &[line.as_str()]) {
                    let _ = g.backup_privileges(&["app".into(), "a_p".into()], true);
                }
            }

            #[test]
            fn patterns_never_panic(pattern in "[a-z_%\\\\]{0,12}", name in "[a-z_%]{0,12}") {
                let p = DatabasePattern::new(pattern);
                let _ = p.matches(&name);
                let _ = p.is_exact();
            }
        }
    }
}
