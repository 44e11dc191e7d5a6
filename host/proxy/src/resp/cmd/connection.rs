//! Connection commands: `PING`, `ECHO`, `QUIT`, `SELECT 0`, `HELLO`,
//! `AUTH` (with `proxy.data_token`), `CLIENT SETNAME/GETNAME/ID/INFO`
//! (and `SETINFO`, accepted and ignored), and `COMMAND` (`COUNT`, `INFO`,
//! `DOCS`, enough for `redis-cli`).
//!
//! Where it sits in the request flow: run by the connection loop of
//! [`crate::resp`] on the connection's [`Session`], in order and alone
//! (they change what the next commands see); no routing, no node.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};

use super::{SPECS, Session, Spec, integer, lookup, syntax_error, wrong_arity};
use crate::context::Shared;
use crate::resp::frame::Reply;

/// Runs the connection command `spec` (arity checked).
pub fn run(shared: &Shared, session: &mut Session, spec: &Spec, args: &[Bytes]) -> Reply {
    match spec.name {
        "ping" => match args.len() {
            1 => Reply::Simple("PONG"),
            2 => Reply::Bulk(args[1].clone()),
            _ => wrong_arity("ping"),
        },
        "echo" => Reply::Bulk(args[1].clone()),
        "quit" => {
            session.quit = true;
            Reply::Ok
        }
        "select" => match integer(&args[1]) {
            Ok(0) => Reply::Ok,
            Ok(_) => Reply::err("DB index is out of range"),
            Err(reply) => reply,
        },
        "auth" => auth(shared, session, &args[1..]),
        "hello" => hello(shared, session, args),
        "client" => client(session, args),
        "command" => command(args),
        other => Reply::err(format!("unknown command '{other}'")),
    }
}

/// `AUTH [username] password`: the password is `proxy.data_token`, the
/// only user `default`.
fn auth(shared: &Shared, session: &mut Session, args: &[Bytes]) -> Reply {
    let (user, password) = match args {
        [password] => (&b"default"[..], password),
        [user, password] => (&user[..], password),
        _ => return syntax_error(),
    };
    let Some(token) = &shared.client_token else {
        return Reply::err(
            "AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        );
    };
    let mut headers = HeaderMap::new();
    let ok = user == b"default"
        && HeaderValue::from_bytes(&[&b"Bearer "[..], password].concat()).is_ok_and(|v| {
            headers.insert(header::AUTHORIZATION, v);
            token.check(&headers).is_ok()
        });
    if ok {
        session.authenticated = true;
        Reply::Ok
    } else {
        shared.metrics.refuse("forbidden");
        Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
    }
}

/// `HELLO [protover [AUTH username password] [SETNAME name]]`.
fn hello(shared: &Shared, session: &mut Session, args: &[Bytes]) -> Reply {
    let mut resp3 = session.resp3;
    if let Some(version) = args.get(1) {
        match integer(version) {
            Ok(2) => resp3 = false,
            Ok(3) => resp3 = true,
            Ok(_) => return Reply::Error("NOPROTO unsupported protocol version".into()),
            Err(_) => return Reply::err("Protocol version is not an integer or out of range"),
        }
    }
    let mut i = 2;
    let mut name = None;
    while i < args.len() {
        if args[i].eq_ignore_ascii_case(b"AUTH") && i + 2 < args.len() {
            let reply = auth(shared, session, &args[i + 1..i + 3]);
            if reply.is_error() {
                return reply;
            }
            i += 3;
        } else if args[i].eq_ignore_ascii_case(b"SETNAME") && i + 1 < args.len() {
            name = Some(args[i + 1].clone());
            i += 2;
        } else {
            return Reply::err(format!("Syntax error in HELLO option '{}'", String::from_utf8_lossy(&args[i])));
        }
    }
    if !session.authenticated {
        return Reply::Error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into(),
        );
    }
    if let Some(name) = name {
        if let Err(reply) = check_name(&name) {
            return reply;
        }
        session.name = Some(name);
    }
    session.resp3 = resp3;
    Reply::Map(vec![
        (Reply::text("server"), Reply::text("shardgate")),
        (Reply::text("version"), Reply::text(env!("CARGO_PKG_VERSION"))),
        (Reply::text("proto"), Reply::Int(if resp3 { 3 } else { 2 })),
        (Reply::text("id"), Reply::Int(session.id as i64)),
        (Reply::text("mode"), Reply::text("standalone")),
        (Reply::text("role"), Reply::text("master")),
        (Reply::text("modules"), Reply::Array(vec![])),
    ])
}

fn check_name(name: &[u8]) -> Result<(), Reply> {
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(Reply::err("Client names cannot contain spaces, newlines or special characters."));
    }
    Ok(())
}

/// `CLIENT SETNAME|GETNAME|ID|INFO|SETINFO`.
fn client(session: &mut Session, args: &[Bytes]) -> Reply {
    let sub = args[1].to_ascii_lowercase();
    match (&sub[..], args.len()) {
        (b"setname", 3) => match check_name(&args[2]) {
            Ok(()) => {
                session.name = (!args[2].is_empty()).then(|| args[2].clone());
                Reply::Ok
            }
            Err(reply) => reply,
        },
        (b"getname", 2) => session.name.clone().map_or(Reply::Null, Reply::Bulk),
        (b"id", 2) => Reply::Int(session.id as i64),
        (b"info", 2) => Reply::text(client_info(session)),
        (b"setinfo", 4) => Reply::Ok,
        (b"setname" | b"getname" | b"id" | b"info" | b"setinfo", _) => {
            Reply::err(format!("wrong number of arguments for 'client|{}' command", String::from_utf8_lossy(&sub)))
        }
        _ => Reply::err(format!("unknown subcommand '{}'. Try CLIENT HELP.", String::from_utf8_lossy(&args[1]))),
    }
}

/// One line of `CLIENT INFO`.
pub fn client_info(session: &Session) -> String {
    let name = session.name.as_ref().map(|n| String::from_utf8_lossy(n).into_owned()).unwrap_or_default();
    format!("id={} addr={} name={name} db=0 resp={}\n", session.id, session.peer, if session.resp3 { 3 } else { 2 })
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND INFO name...`, `COMMAND DOCS`.
fn command(args: &[Bytes]) -> Reply {
    let Some(sub) = args.get(1) else {
        return Reply::Array(SPECS.iter().map(info).collect());
    };
    match &sub.to_ascii_lowercase()[..] {
        b"count" => Reply::Int(SPECS.len() as i64),
        b"info" => Reply::Array(args[2..].iter().map(|n| lookup(n).map_or(Reply::Null, info)).collect()),
        // No documentation: clients fall back to their own.
        b"docs" => Reply::Map(vec![]),
        _ => Reply::err(format!("unknown subcommand '{}'. Try COMMAND HELP.", String::from_utf8_lossy(sub))),
    }
}

/// A command as `COMMAND INFO` describes it.
fn info(spec: &Spec) -> Reply {
    let (first, last, step) = spec.keys;
    Reply::Array(vec![
        Reply::text(spec.name),
        Reply::Int(spec.arity),
        Reply::Array(spec.flags.iter().map(|f| Reply::Simple(f)).collect()),
        Reply::Int(first),
        Reply::Int(last),
        Reply::Int(step),
    ])
}
