//! `pgdog demo`, the README's first command, end to end on a small load:
//! the move, the verify under writes, the cutover that freezes the
//! application on the source, and the orders written on the destination
//! that stream back. The demo checks each of these itself and fails with
//! what went wrong; this runs it as the binary would.

use std::process::Command;

#[test]
fn the_demo_moves_verifies_and_cuts_over() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgdog"))
        .args(["demo", "--rows", "3000", "--stream-seconds", "1"])
        .output()
        .expect("pgdog demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for seen in [
        "all 3 tables equal",
        "frozen for role webapp",
        "pgdog.toml.cutover: database \"source\" shard 1 is now",
        "both orders reached the source",
    ] {
        assert!(stdout.contains(seen), "\"{seen}\" not in:\n{stdout}");
    }
    // Each destination shard handed out its own id for the new orders.
    let ids: Vec<i64> = stdout
        .lines()
        .filter_map(|l| l.split("a new order gets id ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(ids.len(), 2, "{stdout}");
    assert_ne!(ids[0], ids[1], "{stdout}");
    assert!(
        ids.iter().all(|&id| id > 9000),
        "above the loaded orders: {ids:?}"
    );
}
