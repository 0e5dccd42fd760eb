//! Human-readable rendering of plans: grouped, aligned, within 80 columns.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::planner::{Action, CleanupAction, Decision, Plan};
use crate::time::format_instant;

/// Total width the table keeps to.
pub const WIDTH: usize = 80;

/// Cuts `s` to at most `max` characters, marking the cut with `~`.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('~');
    out
}

fn age_days(plan: &Plan, d: &Decision) -> String {
    let days = (plan.now - d.creation_date).num_days();
    format!("{days}d")
}

fn reason_cell(d: &Decision) -> String {
    let first = d.reasons[0].as_str();
    if d.reasons.len() > 1 {
        format!("{first}+{}", d.reasons.len() - 1)
    } else {
        first.to_string()
    }
}

/// Renders the plan as a table grouped by lineage, followed by the summary.
pub fn plan_table(plan: &Plan) -> String {
    let mut out = Vec::new();
    write_plan_table(plan, &mut out).expect("writing to memory cannot fail");
    String::from_utf8(out).expect("the table is UTF-8")
}

/// Streams the table to `w`, one group at a time, so a large plan needs no large buffer.
pub fn write_plan_table(plan: &Plan, w: &mut impl std::io::Write) -> std::io::Result<()> {
    write_table(plan, w, false)
}

/// The table with long runs of plainly expired images folded into one line each, for
/// estates of years of nightly builds.
pub fn plan_table_compact(plan: &Plan) -> String {
    let mut out = Vec::new();
    write_table(plan, &mut out, true).expect("writing to memory cannot fail");
    String::from_utf8(out).expect("the table is UTF-8")
}

/// A row with nothing to say beyond its action and single reason: no users, no storage
/// notes. Runs of these fold into one line in the compact table.
fn is_plain(d: &Decision) -> bool {
    d.reasons.len() == 1
        && d.used_by.is_empty()
        && d.stale_versions.is_empty()
        && d.snapshots
            .iter()
            .all(|s| s.action == CleanupAction::Delete)
        && d.bundle.is_none()
        && d.recycle_bin.is_none()
        && d.eligible_at.is_none()
}

fn write_table(plan: &Plan, w: &mut impl std::io::Write, compact: bool) -> std::io::Result<()> {
    let mut out = String::new();
    for members in plan.decisions.chunk_by(|a, b| a.group == b.group) {
        group_header(&mut out, members);
        let mut i = 0;
        while i < members.len() {
            let run = if compact { plain_run(&members[i..]) } else { 1 };
            if run > 3 {
                folded_run(&mut out, &members[i..i + run]);
                i += run;
            } else {
                decision_lines(&mut out, plan, &members[i]);
                i += 1;
            }
        }
        w.write_all(out.as_bytes())?;
        out.clear();
    }
    out.push_str(&summary_lines(plan));
    for warning in &plan.warnings {
        wrapped(&mut out, &format!("warning: {warning}"), 9);
    }
    w.write_all(out.as_bytes())
}

/// Appends `text` as one line cut to [`WIDTH`].
fn line(out: &mut String, text: &str) {
    let _ = writeln!(out, "{}", truncate(text, WIDTH));
}

/// Appends `text` word-wrapped to [`WIDTH`], continuation lines indented by `indent`.
fn wrapped(out: &mut String, text: &str, indent: usize) {
    let _ = writeln!(out, "{}", wrap(text, indent));
}

fn group_title(group: &str) -> &str {
    if group.is_empty() {
        "(no group)"
    } else {
        group
    }
}

/// `web (12 images: 3 keep, 9 deregister)`.
fn group_header(out: &mut String, members: &[Decision]) {
    let dereg = members
        .iter()
        .filter(|d| d.action == Action::Deregister)
        .count();
    let _ = writeln!(
        out,
        "{} ({} images: {} keep, {} deregister)",
        truncate(group_title(&members[0].group), 40),
        members.len(),
        members.len() - dereg,
        dereg
    );
}

/// How many decisions from the first on are plain and alike (same action, same reasons).
fn plain_run(from: &[Decision]) -> usize {
    let first = &from[0];
    if !is_plain(first) {
        return 1;
    }
    from.iter()
        .take_while(|m| is_plain(m) && m.action == first.action && m.reasons == first.reasons)
        .count()
}

/// `  ... 40 images to deregister (expired): web-1 to web-40`.
fn folded_run(out: &mut String, run: &[Decision]) {
    let (first, last) = (&run[0], &run[run.len() - 1]);
    let verb = match first.action {
        Action::Keep => "to keep",
        Action::Deregister => "to deregister",
        Action::Deprecate => "to deprecate",
        Action::Disable => "to disable",
        Action::Enable => "to enable",
    };
    line(
        out,
        &format!(
            "  ... {} images {verb} ({}): {} to {}",
            run.len(),
            first.reasons[0].as_str(),
            first.name,
            last.name
        ),
    );
}

/// One decision: the image line, then who uses it, the snapshots it keeps, its bundle.
fn decision_lines(out: &mut String, plan: &Plan, d: &Decision) {
    let action = match d.action {
        Action::Keep => "keep",
        Action::Deregister => "DEREG",
        Action::Deprecate => "DEPR",
        Action::Disable => "DISAB",
        Action::Enable => "ENABL",
    };
    let head = format!(
        "  {:<21}  {:>5}  {:<5}  {:<24}  ",
        truncate(&d.image_id, 21),
        age_days(plan, d),
        action,
        truncate(&reason_cell(d), 24)
    );
    let room = WIDTH.saturating_sub(head.chars().count());
    let _ = writeln!(out, "{head}{}", truncate(&d.name, room));
    if d.action == Action::Keep && !d.used_by.is_empty() {
        let users: Vec<&str> = d.used_by.iter().map(|u| u.id.as_str()).collect();
        line(out, &format!("      used by {}", users.join(", ")));
    }
    if !d.stale_versions.is_empty() {
        let stale: Vec<&str> = d.stale_versions.iter().map(|u| u.id.as_str()).collect();
        line(
            out,
            &format!("      stale template versions: {}", stale.join(", ")),
        );
    }
    for s in d
        .snapshots
        .iter()
        .filter(|s| s.action == CleanupAction::Retain)
    {
        let why = s.reason.as_ref().map_or("", |r| r.as_str());
        let sep = if s.shared_with.is_empty() { "" } else { ": " };
        line(
            out,
            &format!(
                "      keeps {} ({why}{sep}{})",
                s.snapshot_id,
                s.shared_with.join(" ")
            ),
        );
    }
    if let Some(t) = d.eligible_at {
        line(
            out,
            &format!("      retiring: may go on from {}", format_instant(t)),
        );
    }
    if let Some(f) = &d.recycle_bin {
        let wait = match f.snapshots {
            crate::recycle_bin::SnapshotWait::Deferred => "snapshots wait",
            crate::recycle_bin::SnapshotWait::RetainedBySnapshotRule => "snapshot rule too",
        };
        let until = format_instant(f.restorable_until);
        line(out, &format!("      restorable until {until} ({wait})"));
    }
    if let Some(b) = &d.bundle {
        let verb = match b.action {
            CleanupAction::Delete => "deletes bundle",
            CleanupAction::Retain => "keeps bundle",
        };
        line(out, &format!("      {verb} s3://{}", b.location));
    }
}

/// Word-wraps `text` to [`WIDTH`], indenting continuation lines by `indent` spaces.
pub fn wrap(text: &str, indent: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = " ".repeat(indent);
        } else if !line.is_empty() && !line.chars().all(|c| c == ' ') {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The totals: images, deregistrations, keep reasons and storage, one fact a line.
pub fn summary_lines(plan: &Plan) -> String {
    let s = &plan.summary;
    let reasons: Vec<String> = s
        .by_reason
        .iter()
        .filter(|(r, _)| r.as_str() != "expired")
        .map(|(r, n)| format!("{} {n}", r.as_str()))
        .collect();
    let total = s.deregister + s.keep + s.deprecate + s.disable + s.enable;
    let mut out = format!(
        "plan at {}: {}, {} to deregister, {} to keep",
        format_instant(plan.now),
        plural(total, "image", "images"),
        s.deregister,
        s.keep
    );
    for (n, what) in [
        (s.deprecate, "deprecate"),
        (s.disable, "disable"),
        (s.enable, "enable"),
    ] {
        if n > 0 {
            let _ = write!(out, ", {n} to {what}");
        }
    }
    out.push('\n');
    if !reasons.is_empty() {
        out.push_str(&wrap(&format!("kept: {}", reasons.join(", ")), 6));
        out.push('\n');
    }
    if s.snapshots_deferred > 0 {
        let text = format!(
            "{} deferred until their images leave the Recycle Bin",
            plural(s.snapshots_deferred, "snapshot", "snapshots")
        );
        out.push_str(&wrap(&text, 2));
        out.push('\n');
    }
    if s.kept_only_by_stale_versions > 0 {
        let text = format!(
            "{} kept only by stale launch template versions (usage.launch_template_versions \
             \"default_and_latest\" or \"referenced\" would free them)",
            plural(s.kept_only_by_stale_versions, "image", "images")
        );
        out.push_str(&wrap(&text, 2));
        out.push('\n');
    }
    out.push_str(&wrap(
        &format!(
            "storage: {} to delete ({} GiB), {} retained; {} to delete",
            plural(s.snapshots_to_delete, "snapshot", "snapshots"),
            s.snapshot_gib_to_delete,
            s.snapshots_retained,
            plural(s.bundles_to_delete, "bundle", "bundles"),
        ),
        9,
    ));
    out.push('\n');
    out
}

/// `deregistered 3`, `failed 1`, ...: a count per outcome, named as in JSON reports.
fn counts<K: serde::Serialize>(map: &std::collections::BTreeMap<K, usize>) -> Vec<String> {
    map.iter()
        .map(|(k, n)| format!("{} {n}", label(k)))
        .collect()
}

/// The snake_case name an enum value has in JSON reports.
fn label<K: serde::Serialize>(k: &K) -> String {
    serde_json::to_value(k)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Storage whose image was gone: what reconciliation deletes and what it leaves, and
/// what this run could not queue.
fn reconciled_lines(out: &mut String, r: &crate::app::report::RegionReport, dry_run: bool) {
    let o = &r.orphans;
    let verb = if dry_run { "to delete" } else { "deleting" };
    if o.marked + o.foreign > 0 {
        let _ = writeln!(
            out,
            "{}",
            wrap(
                &format!(
                    "storage whose image is gone, {verb}: {} marked by an earlier run ({} GiB), \
                     {} foreign orphans ({} GiB)",
                    o.marked, o.marked_gib, o.foreign, o.foreign_gib
                ),
                2
            )
        );
    }
    let mut kept: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for d in r.reconciled.iter().filter_map(|d| d.reason) {
        *kept.entry(label(&d)).or_default() += 1;
    }
    if !kept.is_empty() {
        let parts: Vec<String> = kept.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            out,
            "{}",
            wrap(
                &format!("storage whose image is gone, kept: {}", parts.join(", ")),
                2
            )
        );
    }
    if !r.awaiting_reconciliation.is_empty() {
        let _ = writeln!(
            out,
            "{}",
            wrap(
                &format!(
                    "storage awaiting reconciliation (marked; the next sweep deletes it): {}",
                    r.awaiting_reconciliation.join(", ")
                ),
                2
            )
        );
    }
}

/// Renders a sweep report: per region the plan grouped by lineage (long runs of plain
/// expiries folded), what did not simply succeed and why, then the totals, the storage
/// freed and the API calls.
pub fn sweep_table(report: &crate::app::report::SweepReport) -> String {
    let mut out = String::new();
    for r in &report.regions {
        let _ = writeln!(out, "== region {}", r.region);
        if let Some(e) = &r.error {
            wrapped(&mut out, &format!("FAILED: {e}"), 8);
            if r.plan_detail.is_none() {
                continue;
            }
        }
        match &r.plan_detail {
            Some(plan) if report.dry_run => out.push_str(&plan_table_compact(plan)),
            // A real run: what happened per lineage; the dry run shows the why.
            _ => outcomes_by_group(&mut out, r),
        }
        not_deregistered(&mut out, r);
        unfinished_jobs(&mut out, r);
        reconciled_lines(&mut out, r, report.dry_run);
    }
    totals_lines(&mut out, report);
    out
}

/// `web: 9 deregistered, 1 failed`, one line per lineage.
fn outcomes_by_group(out: &mut String, r: &crate::app::report::RegionReport) {
    use crate::app::report::{ImageReport, Outcome};
    let mut by_group: BTreeMap<&str, Vec<&ImageReport>> = BTreeMap::new();
    for i in r.images.iter().filter(|i| i.outcome.is_some()) {
        by_group.entry(i.group.as_str()).or_default().push(i);
    }
    for (group, images) in by_group {
        let mut tally: BTreeMap<Outcome, usize> = BTreeMap::new();
        for o in images.iter().filter_map(|i| i.outcome) {
            *tally.entry(o).or_default() += 1;
        }
        let text = format!("{}: {}", group_title(group), counts(&tally).join(", "));
        wrapped(out, &text, 2);
    }
}

/// The condemned images that were not deregistered after all, with the error.
fn not_deregistered(out: &mut String, r: &crate::app::report::RegionReport) {
    use crate::app::report::Outcome;
    let mut notable = r.images.iter().filter_map(|i| {
        i.outcome
            .filter(|o| {
                !matches!(
                    o,
                    Outcome::Deregistered
                        | Outcome::Planned
                        | Outcome::Deprecated
                        | Outcome::Disabled
                        | Outcome::Enabled
                )
            })
            .map(|o| (i, o))
    });
    let Some(first) = notable.next() else {
        return;
    };
    let _ = writeln!(out, "not deregistered after all:");
    for (i, o) in std::iter::once(first).chain(notable) {
        line(
            out,
            &format!("  {:<21}  {:<22}  {}", i.image_id, label(&o), i.name),
        );
        if let Some(e) = &i.error {
            wrapped(out, &format!("      {e}"), 6);
        }
    }
}

/// Cleanup jobs that failed or are still being retried.
fn unfinished_jobs(out: &mut String, r: &crate::app::report::RegionReport) {
    use crate::app::report::JobOutcome;
    for j in r
        .jobs
        .iter()
        .filter(|j| matches!(j.outcome, JobOutcome::Failed | JobOutcome::Retrying))
    {
        let text = format!(
            "  {} {} {} after {} attempts: {}",
            j.kind,
            j.target,
            label(&j.outcome),
            j.attempts,
            j.error.as_deref().unwrap_or("")
        );
        wrapped(out, &text, 6);
    }
}

/// The run's totals, its API calls and, if it stopped early, why.
fn totals_lines(out: &mut String, report: &crate::app::report::SweepReport) {
    let t = &report.totals;
    let or_else = |v: Vec<String>, none: &str| {
        if v.is_empty() {
            none.to_string()
        } else {
            v.join(", ")
        }
    };
    let text = format!(
        "{}: {} images evaluated; {}; cleanup jobs: {}; {} GiB of snapshots deleted; \
         {} failures; {} ms",
        if report.dry_run { "dry run" } else { "sweep" },
        t.images,
        or_else(counts(&t.outcomes), "nothing to deregister"),
        or_else(counts(&t.jobs), "none"),
        t.snapshot_gib_deleted,
        t.failures,
        report.elapsed_ms
    );
    wrapped(out, &text, 2);
    let calls: Vec<String> = report
        .api_calls
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let text = format!(
        "api calls: {}; throttled attempts (retried): {}",
        calls.join(", "),
        report.throttles
    );
    wrapped(out, &text, 2);
    if let Some(why) = report.stopped {
        let why = match why {
            crate::app::stop::StopReason::Signal => "signal",
            crate::app::stop::StopReason::Deadline => "deadline",
        };
        let text = format!(
            "STOPPED early ({why}): no new deregistrations were started; what was left \
             is deferred to the next run, and marked storage is reconciled then"
        );
        wrapped(out, &text, 2);
    }
}

/// Renders one drain of the cleanup queue.
pub fn cleanup_table(report: &crate::app::report::CleanupReport) -> String {
    let mut out = String::new();
    for j in &report.jobs {
        let _ = writeln!(
            out,
            "{}",
            truncate(
                &format!(
                    "{:<21}  {:<15} {:<24} {}{}",
                    j.image_id,
                    j.kind,
                    truncate(&j.target, 24),
                    label(&j.outcome),
                    j.error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
                WIDTH
            )
        );
    }
    for m in &report.malformed {
        let _ = writeln!(out, "{}", wrap(&format!("malformed: {m}"), 2));
    }
    let totals = counts(&report.totals);
    let _ = writeln!(
        out,
        "{}",
        wrap(
            &format!(
                "cleanup: {} jobs ({}); {} malformed; {} redelivered (not counted again); \
                 {} visible at start; ended: {}; {} ms",
                report.jobs.len(),
                totals.join(", "),
                report.malformed.len(),
                report.redelivered,
                report.visible_at_start,
                report.ended,
                report.elapsed_ms
            ),
            2
        )
    );
    out
}

/// Renders an organization sweep: one line per account, then each pair that failed.
pub fn org_table(report: &crate::app::org::OrgReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "== organization sweep {}", report.run);
    for (account, a) in &report.accounts {
        let text = format!(
            "{account}: {} images evaluated, {} deregistered, {} failures{}",
            a.images,
            a.deregistered,
            a.failures,
            a.error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
        wrapped(&mut out, &text, 2);
    }
    for p in &report.pairs {
        if let Some(r) = &p.report {
            for region in r.regions.iter().filter(|r| r.error.is_some()) {
                let e = region.error.as_deref().unwrap_or_default();
                wrapped(
                    &mut out,
                    &format!("  {} {}: FAILED: {e}", p.account, p.region),
                    6,
                );
            }
        }
    }
    let _ = writeln!(out, "{} failures", report.failures);
    out
}

#[cfg(test)]
mod tests {
    use super::{truncate, wrap, WIDTH};

    #[test]
    fn compact_table_folds_long_plain_runs_only() {
        use crate::model::{Image, Inventory, Usage};
        let now = crate::time::parse_instant("2026-11-26T00:00:00Z").unwrap();
        let images: Vec<Image> = (0..40)
            .map(|d| {
                Image::new(
                    format!("ami-{d:03}"),
                    format!("web-{d:03}"),
                    now - chrono::TimeDelta::days(d),
                )
            })
            .collect();
        let policy =
            crate::Policy::from_json(r#"{"retention": {"min_age_days": 10, "keep_count": 2}}"#)
                .unwrap();
        let plan = crate::plan(&policy, &Inventory::new(images, Usage::new()).unwrap(), now);
        let full = super::plan_table(&plan);
        let compact = super::plan_table_compact(&plan);
        assert!(full.lines().count() > 40);
        assert!(compact.contains("... 8 images to keep (too_young): web-002 to web-009"));
        assert!(compact.contains("... 30 images to deregister (expired): web-010 to web-039"));
        // The two kept by count stay visible (a run of two is not folded).
        assert!(compact.contains("within_keep_count"));
        assert!(compact.lines().count() < 12, "{compact}");
        for line in compact.lines() {
            assert!(line.chars().count() <= WIDTH, "{line:?}");
        }
    }

    #[test]
    fn wrap_keeps_lines_within_the_width() {
        let text = "kept: ".to_string() + &"not_selected 3, ".repeat(20);
        let wrapped = wrap(text.trim_end(), 6);
        assert!(wrapped.lines().count() > 1);
        for line in wrapped.lines() {
            assert!(line.chars().count() <= WIDTH, "{line:?}");
        }
        assert!(wrapped.lines().skip(1).all(|l| l.starts_with("      n")));
        let rejoined: Vec<&str> = wrapped.split_whitespace().collect();
        let original: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(rejoined, original);
    }

    #[test]
    fn truncate_marks_the_cut() {
        assert_eq!(truncate("abcdef", 6), "abcdef");
        assert_eq!(truncate("abcdefg", 6), "abcde~");
        assert_eq!(truncate("abc", 0), "");
        assert_eq!(truncate("abc", 1), "~");
    }
}
