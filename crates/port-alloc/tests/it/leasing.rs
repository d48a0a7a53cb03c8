//! Leasing, preference, hand-over, release and listing.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use port_alloc::{Error, Holder, Liveness, Options, PortAllocator};
use test_support::{TestResult, child};

use crate::{allocator, bindable, read_ports, report_ports, wait_for};

#[test]
fn leases_are_idempotent_and_extensible() -> TestResult {
    let state = tempfile::tempdir()?;
    let ports = allocator(state.path(), 31000..31064)?;
    let first = ports.lease(
        "test-integration-api",
        &["APP_PORT", "API_PORT"],
        Holder::current_process(),
    )?;
    assert_eq!(first.owner, "test-integration-api");
    assert_eq!(first.ports.len(), 2);
    let app = first.port("APP_PORT").ok_or("no APP_PORT")?;
    let api = first.port("API_PORT").ok_or("no API_PORT")?;
    assert_ne!(app, api);
    assert!((31000..31064).contains(&app) && (31000..31064).contains(&api));

    let again = ports.lease(
        "test-integration-api",
        &["API_PORT", "APP_PORT"],
        Holder::current_process(),
    )?;
    assert_eq!(again, first);

    let extended = ports.lease(
        "test-integration-api",
        &["APP_PORT", "REDIS_PORT"],
        Holder::current_process(),
    )?;
    assert_eq!(extended.port("APP_PORT"), Some(app));
    assert_eq!(extended.port("API_PORT"), Some(api));
    let redis = extended.port("REDIS_PORT").ok_or("no REDIS_PORT")?;
    assert!(redis != app && redis != api);
    assert_eq!(ports.list()?.len(), 1);
    Ok(())
}

#[test]
fn an_owner_gets_its_preferred_block_again_after_release() -> TestResult {
    let range = 31100..31164;
    let state = tempfile::tempdir()?;
    let ports = allocator(state.path(), range.clone())?;
    let names = ["APP_PORT", "API_PORT", "WS_PORT"];
    let first = ports.lease("feature-x", &names, Holder::Manual)?;
    ports.release_owner("feature-x")?;
    let recreated = ports.lease("feature-x", &names, Holder::Manual)?;
    assert_eq!(recreated.ports, first.ports);

    // The preference comes from the name alone, not from this document.
    let elsewhere = tempfile::tempdir()?;
    let other_host = allocator(elsewhere.path(), range)?;
    assert_eq!(
        other_host.lease("feature-x", &names, Holder::Manual)?.ports,
        first.ports
    );

    // Its block is contiguous: first port, first + 1, first + 2.
    let mut sorted: Vec<u16> = first.ports.values().copied().collect();
    sorted.sort_unstable();
    assert_eq!(sorted[2] - sorted[0], 2, "{sorted:?}");
    Ok(())
}

#[test]
fn colliding_preferences_are_probed_never_shared() -> TestResult {
    // Eight ports: one block, which every owner prefers.
    let state = tempfile::tempdir()?;
    let ports = allocator(state.path(), 31200..31208)?;
    let mut seen = HashSet::new();
    for owner in ["alpha", "beta", "gamma", "delta"] {
        let lease = ports.lease(owner, &["APP_PORT", "API_PORT"], Holder::Manual)?;
        for port in lease.ports.values() {
            assert!(seen.insert(*port), "port {port} handed out twice");
        }
    }
    assert_eq!(seen.len(), 8);
    Ok(())
}

/// Child: listen on the given addresses (as another program would), report
/// them, keep listening until `stop` appears.
fn listening_child(args: &[String]) -> TestResult {
    let (stop, addresses) = args.split_first().ok_or("no args")?;
    let listeners = addresses
        .iter()
        .map(|address| TcpListener::bind(address.parse::<SocketAddr>()?).map_err(Into::into))
        .collect::<TestResult<Vec<_>>>()?;
    report_ports(
        listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<Vec<_>, _>>()?,
    )?;
    wait_for(&PathBuf::from(stop))?;
    Ok(())
}

#[test]
fn a_port_another_program_listens_on_is_never_handed_out() -> TestResult {
    if let Some(args) = child::args() {
        return listening_child(&args);
    }
    let (start, end) = (31300u16, 31308u16);
    let signals = tempfile::tempdir()?;
    let stop = signals.path().join("stop");
    let ipv6 = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok();
    // Loopback only, all interfaces, and (where it exists) IPv6 loopback.
    let mut addresses = vec![
        SocketAddr::from((Ipv4Addr::LOCALHOST, start + 1)),
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, start + 4)),
    ];
    if ipv6 {
        addresses.push(SocketAddr::from((Ipv6Addr::LOCALHOST, start + 6)));
    }
    let mut args = vec![stop.display().to_string()];
    args.extend(addresses.iter().map(ToString::to_string));
    let mut program = child::spawn(
        "leasing::a_port_another_program_listens_on_is_never_handed_out",
        &args,
    )?;
    let busy = read_ports(&mut program)?;
    assert_eq!(busy.len(), addresses.len());

    let state = tempfile::tempdir()?;
    let ports = allocator(state.path(), start..end)?;
    let free = usize::from(end - start) - busy.len();
    let names: Vec<String> = (0..free).map(|i| format!("PORT_{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let lease = ports.lease("everything-left", &names, Holder::Manual)?;
    for port in lease.ports.values() {
        assert!(!busy.contains(port), "busy port {port} handed out");
        assert!(bindable(*port));
    }
    // Only the busy ports are left, and they are refused.
    let error = ports
        .lease("one-more", &["APP_PORT"], Holder::Manual)
        .err()
        .ok_or("a busy port was handed out")?;
    assert!(
        matches!(error, Error::Exhausted { available: 0, leased, .. } if leased == free),
        "{error:?}"
    );

    // Once the program stops listening, its ports can be leased.
    std::fs::write(&stop, "")?;
    child::wait_success(program)?;
    let after = ports.lease("one-more", &["APP_PORT"], Holder::Manual)?;
    assert!(busy.contains(&after.port("APP_PORT").ok_or("no port")?));
    Ok(())
}

#[test]
fn lease_bound_hands_over_listening_sockets() -> TestResult {
    let state = tempfile::tempdir()?;
    let ports = allocator(state.path(), 31400..31432)?;
    let loopback = IpAddr::from(Ipv4Addr::LOCALHOST);
    let bound = ports.lease_bound(
        "server",
        &["APP_PORT", "API_PORT"],
        Holder::current_process(),
        loopback,
    )?;
    assert_eq!(bound.listeners.len(), 2);
    for (name, listener) in &bound.listeners {
        assert_eq!(Some(listener.local_addr()?.port()), bound.lease.port(name));
    }
    // The sockets really listen.
    let app = &bound.listeners["APP_PORT"];
    let mut client = TcpStream::connect((Ipv4Addr::LOCALHOST, app.local_addr()?.port()))?;
    client.write_all(b"ping")?;
    let (mut server_side, _) = app.accept()?;
    server_side.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buffer = [0; 4];
    server_side.read_exact(&mut buffer)?;
    assert_eq!(&buffer, b"ping");

    // While they are held, asking to bind them again is a clear error and
    // changes nothing; once dropped, the same ports come back bound.
    let error = ports
        .lease_bound(
            "server",
            &["APP_PORT", "WS_PORT"],
            Holder::current_process(),
            loopback,
        )
        .err()
        .ok_or("bound a held port twice")?;
    assert!(
        matches!(&error, Error::Bind { name, port, .. } if name == "APP_PORT" && Some(*port) == bound.lease.port("APP_PORT")),
        "{error:?}"
    );
    assert_eq!(ports.list()?[0].ports, bound.lease.ports);
    let lease = bound.lease.clone();
    drop((bound, client, server_side));
    let again = ports.lease_bound("server", &["APP_PORT"], Holder::current_process(), loopback)?;
    assert_eq!(again.lease.ports, lease.ports);
    assert_eq!(
        again.listeners["APP_PORT"].local_addr()?.port(),
        lease.port("APP_PORT").ok_or("no port")?
    );

    let error = ports
        .lease_bound("x", &["P"], Holder::Manual, IpAddr::from([192, 0, 2, 1]))
        .err()
        .ok_or("bound a foreign address")?;
    assert!(matches!(error, Error::BindAddress { .. }), "{error:?}");
    Ok(())
}

#[test]
fn releasing_what_is_not_leased_is_a_no_op() -> TestResult {
    let state = tempfile::tempdir()?;
    let ports = allocator(state.path(), 31500..31532)?;
    assert!(ports.release_owner("nobody")?.is_empty());
    assert!(!ports.release_port(31510)?);
    let lease = ports.lease("wt", &["APP_PORT", "API_PORT"], Holder::Manual)?;
    let app = lease.port("APP_PORT").ok_or("no port")?;
    assert!(ports.release_port(app)?);
    assert!(!ports.release_port(app)?);
    let left = ports.list()?;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].ports.keys().collect::<Vec<_>>(), ["API_PORT"]);
    // Releasing the last port removes the owner.
    assert!(ports.release_port(lease.port("API_PORT").ok_or("no port")?)?);
    assert!(ports.list()?.is_empty());
    Ok(())
}

#[test]
fn list_shows_owner_ports_pid_age_and_liveness() -> TestResult {
    let state = tempfile::tempdir()?;
    let ports = allocator(state.path(), 31600..31632)?;
    let lease = ports.lease("a-process", &["APP_PORT"], Holder::current_process())?;
    ports.lease("a-worktree", &["APP_PORT", "API_PORT"], Holder::Manual)?;
    std::thread::sleep(Duration::from_millis(20));
    let listed = ports.list()?;
    assert_eq!(
        listed.iter().map(|l| l.owner.as_str()).collect::<Vec<_>>(),
        ["a-process", "a-worktree"]
    );
    let process = &listed[0];
    assert_eq!(process.ports, lease.ports);
    assert_eq!(process.pid, Some(std::process::id()));
    assert_eq!(process.liveness, Liveness::Running);
    assert!(
        process.age >= Duration::from_millis(20),
        "{:?}",
        process.age
    );
    assert_eq!(listed[1].pid, None);
    assert_eq!(listed[1].liveness, Liveness::Manual);
    assert_eq!(listed[1].holder, Holder::Manual);
    Ok(())
}

/// Child: open with default options and lease one port.
fn default_options_child(_: &[String]) -> TestResult {
    let ports = PortAllocator::open(Options::default())?;
    let lease = ports.lease("from-env", &["APP_PORT"], Holder::Manual)?;
    report_ports(lease.ports.values().copied())?;
    Ok(())
}

#[test]
fn the_state_dir_comes_from_the_environment() -> TestResult {
    if let Some(args) = child::args() {
        return default_options_child(&args);
    }
    let base = tempfile::tempdir()?;
    let explicit = base.path().join("explicit");
    let xdg = base.path().join("xdg");
    let home = base.path().join("home");
    let cases = [
        (
            vec![("ISOLANE_STATE_DIR", &explicit), ("XDG_STATE_HOME", &xdg)],
            explicit.join("ports.json"),
        ),
        (
            vec![("XDG_STATE_HOME", &xdg), ("HOME", &home)],
            xdg.join("isolane/ports.json"),
        ),
        (
            vec![("HOME", &home)],
            home.join(".local/state/isolane/ports.json"),
        ),
    ];
    for (env, expected) in cases {
        let mut command = child::command("leasing::the_state_dir_comes_from_the_environment", &[])?;
        command
            .env_remove("ISOLANE_STATE_DIR")
            .env_remove("XDG_STATE_HOME")
            .env("ISOLANE_PORT_CLAIMS_DIR", base.path().join("claims"))
            .envs(env.iter().map(|(k, v)| (k, v.as_os_str())))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        child::wait_success(command.spawn()?)?;
        let text = std::fs::read_to_string(&expected)?;
        assert!(text.contains("from-env"), "{expected:?}: {text}");
    }
    Ok(())
}

#[test]
fn a_corrupt_document_is_reported_and_left_alone() -> TestResult {
    let state = tempfile::tempdir()?;
    let ports = allocator(state.path(), 31700..31732)?;
    ports.lease("wt", &["APP_PORT"], Holder::Manual)?;
    let garbage = b"{\"schema_version\": 1, \"data\": {\"owners\": tru";
    std::fs::write(ports.path(), garbage)?;

    let error = ports
        .lease("other", &["APP_PORT"], Holder::Manual)
        .err()
        .ok_or("leased on a corrupt document")?;
    assert!(
        matches!(error, Error::Registry(registry::Error::Corrupt { .. })),
        "{error:?}"
    );
    assert!(matches!(
        ports.list(),
        Err(Error::Registry(registry::Error::Corrupt { .. }))
    ));
    assert!(matches!(
        ports.release_owner("wt"),
        Err(Error::Registry(registry::Error::Corrupt { .. }))
    ));
    assert_eq!(std::fs::read(ports.path())?, garbage);
    Ok(())
}
