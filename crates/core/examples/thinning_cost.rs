//! What thinning costs the planner: `plan` over a synthetic estate (100,000 nightly images
//! by default, 150 lineages) under the benchmark's grouped policy, with and without its
//! three thinning windows, best of five runs each. No I/O beyond the printout; run with
//! `cargo run -p ami-sweeper-core --example thinning_cost [IMAGES]` (a debug build is
//! enough to compare the two: `make bench-plan` measures the release binary end to end).

use std::time::{Duration, Instant};

use ami_sweeper_core::inventory::Inventory;
use ami_sweeper_core::model::{Image, Usage};
use ami_sweeper_core::time::parse_instant;
use ami_sweeper_core::{plan, Policy};

const GROUPED: &str = r#"{
  "selection": {"names": ["*-prod-*", "*-staging-*", "*-dev-*"], "tags": {"team": "platform"}, "exclude_tags": {"retain": "*"}},
  "retention": {"min_age_days": 14, "keep_count": 5,
    "group_by": {"tags": ["app", "env"], "name_regex": "^(.*)-[0-9]{12}$"},
    "launched_within_days": 7 THIN}
}"#;

const THIN: &str = r#", "thin": [{"after_days": 14, "keep_one_per": "week"},
    {"after_days": 92, "keep_one_per": "month"}, {"after_days": 366, "keep_one_per": "none"}]"#;

fn estate(n: usize) -> Inventory {
    let now = parse_instant("2026-11-26T00:00:00Z").unwrap();
    let lineages = 150;
    let images = (0..n)
        .map(|i| {
            let (lineage, night) = (i % lineages, i / lineages);
            let (app, env) = (lineage / 3, ["prod", "staging", "dev"][lineage % 3]);
            let at = now - chrono::TimeDelta::hours(24 * night as i64 + (lineage % 24) as i64);
            let name = format!("app{app}-{env}-{}", at.format("%Y%m%d%H%M"));
            let mut img = Image::new(format!("ami-{i:017x}"), name, at);
            for (k, v) in [("team", "platform"), ("env", env)] {
                img.tags.insert(k, v);
            }
            img.tags.insert("app", format!("app{app}"));
            img
        })
        .collect();
    Inventory::new(images, Usage::new()).unwrap()
}

fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn main() {
    let n = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let inventory = estate(n);
    let now = parse_instant("2026-11-26T00:00:00Z").unwrap();
    let plain = Policy::from_json(&GROUPED.replace(" THIN", "")).unwrap();
    let thinned = Policy::from_json(&GROUPED.replace(" THIN", THIN)).unwrap();
    let a = best_of(5, || drop(plan(&plain, &inventory, now)));
    let b = best_of(5, || drop(plan(&thinned, &inventory, now)));
    let p = plan(&thinned, &inventory, now);
    println!(
        "{n} images: plan {:.3} s, with three thinning windows {:.3} s ({:.2}x); {} thinned",
        a.as_secs_f64(),
        b.as_secs_f64(),
        b.as_secs_f64() / a.as_secs_f64(),
        p.summary
            .by_reason
            .get(&ami_sweeper_core::planner::Reason::Thinned)
            .unwrap_or(&0)
    );
}
