//! Human-readable rendering of plans: grouped, aligned, within 80 columns.
//! `markdown` renders the same folded rows for pull-request comments and tickets;
//! `reference` the policy reference from the policy's JSON Schema.

pub mod markdown;
pub mod reference;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::model::ImageState;
use crate::planner::{Action, CleanupAction, Decision, Plan, Reason, RetainReason};
use crate::pricing::{Savings, Usd};
use crate::recycle_bin::SnapshotWait;
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

pub(crate) fn age_days(plan: &Plan, d: &Decision) -> String {
    let days = (plan.now - d.creation_date).num_days();
    format!("{days}d")
}

pub(crate) fn reason_cell(d: &Decision) -> String {
    let first = d.reasons[0].as_str();
    if d.reasons.len() > 1 {
        format!("{first}+{}", d.reasons.len() - 1)
    } else {
        first.to_string()
    }
}

/// Renders the plan as a table grouped by lineage, runs of alike images folded, followed
/// by the summary.
pub fn plan_table(plan: &Plan) -> String {
    let mut out = Vec::new();
    write_table(plan, None, &mut out, true).expect("writing to memory cannot fail");
    String::from_utf8(out).expect("the table is UTF-8")
}

/// Streams the folded table to `w`, one group at a time, so a large plan needs no large
/// buffer; with `savings`, each group and folded run says what it saves a month.
pub fn write_plan_table(
    plan: &Plan,
    savings: Option<&Savings>,
    w: &mut impl std::io::Write,
) -> std::io::Result<()> {
    write_table(plan, savings, w, true)
}

/// The table with one line (and its notes) per image, nothing folded.
pub fn plan_table_full(plan: &Plan) -> String {
    let mut out = Vec::new();
    write_table(plan, None, &mut out, false).expect("writing to memory cannot fail");
    String::from_utf8(out).expect("the table is UTF-8")
}

/// Reasons that make an image interesting on its own: it never folds with others.
const OWN_LINE_REASONS: [Reason; 8] = [
    Reason::ExcludedByTag,
    Reason::Excepted,
    Reason::BackupManaged,
    Reason::Unsettled,
    Reason::DeregistrationProtected,
    Reason::InUse,
    Reason::Shared,
    Reason::RecentlyLaunched,
];

fn day(t: crate::model::Timestamp) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// What a row says beyond its action and reasons when it may share a folded line with
/// its neighbours (same bin date, same retirement date); `None` when the image is
/// interesting on its own (in use, shared, protected, excluded, failed, storage kept for
/// a reason of its own) and keeps its own lines.
fn fold_note(d: &Decision) -> Option<String> {
    let own_storage = d.snapshots.iter().any(|s| {
        s.action == CleanupAction::Retain
            && (!s.shared_with.is_empty()
                || !matches!(
                    s.reason,
                    Some(
                        RetainReason::ImageInRecycleBin
                            | RetainReason::DeferredForRecycleBin
                            | RetainReason::CleanupDisabled
                    )
                ))
    });
    if d.reasons.iter().any(|r| OWN_LINE_REASONS.contains(r))
        || !d.used_by.is_empty()
        || !d.stale_versions.is_empty()
        || d.bundle.is_some()
        || own_storage
        || matches!(d.state, ImageState::Failed | ImageState::Error)
    {
        return None;
    }
    let mut notes = Vec::new();
    if let Some(t) = &d.thinning {
        notes.push(t.window());
    }
    if d.snapshots
        .iter()
        .any(|s| s.reason == Some(RetainReason::CleanupDisabled))
    {
        notes.push("snapshots kept (cleanup_disabled)".to_string());
    }
    if let Some(t) = d.eligible_at {
        notes.push(format!("retiring, may go on from {}", day(t)));
    }
    if let Some(f) = &d.recycle_bin {
        let until = day(f.restorable_until);
        notes.push(match f.snapshots {
            SnapshotWait::Deferred => format!("snapshots wait in the Recycle Bin until {until}"),
            SnapshotWait::RetainedBySnapshotRule => {
                format!("restorable until {until} (a snapshot rule keeps the snapshots)")
            }
        });
    }
    Some(notes.join("; "))
}

/// Runs of at least this many alike images fold into one line.
const FOLD_AT: usize = 3;

fn write_table(
    plan: &Plan,
    savings: Option<&Savings>,
    w: &mut impl std::io::Write,
    fold: bool,
) -> std::io::Result<()> {
    let mut out = String::new();
    for members in groups(plan) {
        let _ = writeln!(out, "{}", group_header(members, savings));
        for row in fold_rows(members, fold) {
            match row {
                Row::Folded { run, note } => {
                    wrapped(&mut out, &folded_text(run, &note, savings), 6);
                }
                Row::Single(d) => decision_lines(&mut out, plan, d),
            }
        }
        w.write_all(out.as_bytes())?;
        out.clear();
    }
    out.push_str(&plan_tail(plan, savings));
    w.write_all(out.as_bytes())
}

/// What follows a plan's groups: the totals, the saving estimate, the exceptions that
/// lapse soon and the warnings.
pub(crate) fn plan_tail(plan: &Plan, savings: Option<&Savings>) -> String {
    let mut out = summary_lines(plan);
    if let Some(s) = savings {
        savings_lines(&mut out, s);
    }
    let lapsing = plan.lapsing(crate::planner::LAPSING_WITHIN_DAYS);
    if !lapsing.is_empty() {
        let _ = writeln!(
            out,
            "exceptions lapsing within {} days: {}",
            crate::planner::LAPSING_WITHIN_DAYS,
            lapsing.len()
        );
        for d in lapsing {
            wrapped(&mut out, &format!("  {}", d.exception_line()), 4);
        }
    }
    for warning in &plan.warnings {
        wrapped(&mut out, &format!("warning: {warning}"), 9);
    }
    out
}

/// The plan's decisions, one slice per group, in the plan's order.
pub(crate) fn groups(plan: &Plan) -> impl Iterator<Item = &[Decision]> {
    plan.decisions.chunk_by(|a, b| a.group == b.group)
}

/// One row of a group, as every human-readable format shows it: a run of alike images
/// folded into one line, or one image on its own lines.
pub(crate) enum Row<'a> {
    /// At least [`FOLD_AT`] alike images and the note they share (maybe empty).
    Folded { run: &'a [Decision], note: String },
    /// An image shown on its own.
    Single(&'a Decision),
}

/// A group's rows: runs of alike images folded (when `fold`), the rest one by one. The
/// table and the markdown share it, so both fold alike.
pub(crate) fn fold_rows(members: &[Decision], fold: bool) -> Vec<Row<'_>> {
    let notes: Vec<Option<String>> = if fold {
        members.iter().map(fold_note).collect()
    } else {
        vec![None; members.len()]
    };
    let mut rows = Vec::new();
    let mut i = 0;
    while i < members.len() {
        let run = alike_run(&members[i..], &notes[i..]);
        if run >= FOLD_AT {
            let note = notes[i].clone().unwrap_or_default();
            rows.push(Row::Folded {
                run: &members[i..i + run],
                note,
            });
        } else {
            rows.extend(members[i..i + run].iter().map(Row::Single));
        }
        i += run;
    }
    rows
}

/// Appends `text` as one line cut to [`WIDTH`].
fn line(out: &mut String, text: &str) {
    let _ = writeln!(out, "{}", truncate(text, WIDTH));
}

/// Appends `text` word-wrapped to [`WIDTH`], continuation lines indented by `indent`.
fn wrapped(out: &mut String, text: &str, indent: usize) {
    let _ = writeln!(out, "{}", wrap(text, indent));
}

pub(crate) fn group_title(group: &str) -> &str {
    if group.is_empty() {
        "(no group)"
    } else {
        group
    }
}

/// `web (12 images: 3 keep, 9 deregister; saves $3.20/month)`.
pub(crate) fn group_header(members: &[Decision], savings: Option<&Savings>) -> String {
    let dereg = members
        .iter()
        .filter(|d| d.action == Action::Deregister)
        .count();
    let saves = savings
        .and_then(|s| s.by_group.get(&members[0].group))
        .filter(|u| !u.is_zero())
        .map(|u| format!("; saves {u}/month"))
        .unwrap_or_default();
    format!(
        "{} ({} images: {} keep, {} deregister{saves})",
        truncate(group_title(&members[0].group), 40),
        members.len(),
        members.len() - dereg,
        dereg
    )
}

/// How many decisions from the first on fold together: same action, same reasons, same
/// note; 1 when the first is interesting on its own.
fn alike_run(from: &[Decision], notes: &[Option<String>]) -> usize {
    let (first, Some(note)) = (&from[0], &notes[0]) else {
        return 1;
    };
    from.iter()
        .zip(notes)
        .take_while(|(m, n)| {
            n.as_ref() == Some(note) && m.action == first.action && m.reasons == first.reasons
        })
        .count()
}

/// `  ... 40 images to deregister (expired): web-1 to web-40; <note>; saves $2.00/month`,
/// unwrapped.
pub(crate) fn folded_text(run: &[Decision], note: &str, savings: Option<&Savings>) -> String {
    let first = &run[0];
    let verb = match first.action {
        Action::Keep => "to keep",
        Action::Deregister => "to deregister",
        Action::Deprecate => "to deprecate",
        Action::Disable => "to disable",
        Action::Enable => "to enable",
    };
    let reasons: Vec<&str> = first.reasons.iter().map(|r| r.as_str()).collect();
    format!(
        "  ... {} images {verb} ({}): {}",
        run.len(),
        reasons.join("+"),
        folded_tail(run, note, savings)
    )
}

/// `web-1 to web-40; <note>; saves $2.00/month`: a folded run's names, shared note and
/// saving.
pub(crate) fn folded_tail(run: &[Decision], note: &str, savings: Option<&Savings>) -> String {
    let (first, last) = (&run[0], &run[run.len() - 1]);
    let mut text = format!("{} to {}", first.name, last.name);
    if !note.is_empty() {
        let _ = write!(text, "; {note}");
    }
    if let Some(s) = savings {
        let saved: Usd = run
            .iter()
            .filter_map(|d| s.by_image.get(&d.image_id))
            .map(|i| i.monthly)
            .sum();
        let later: Usd = run
            .iter()
            .filter_map(|d| s.by_image.get(&d.image_id))
            .map(|i| i.monthly_deferred)
            .sum();
        if !saved.is_zero() {
            let _ = write!(text, "; saves {saved}/month");
        } else if !later.is_zero() {
            let _ = write!(text, "; then saves {later}/month");
        }
    }
    text
}

/// The estimate's lines: this run's saving, what the Recycle Bin releases later, the
/// prices and what the figures cannot know.
pub(crate) fn savings_lines(out: &mut String, s: &Savings) {
    let mut text = format!("estimated saving: {}/month", s.monthly);
    if !s.monthly_deferred.is_zero() {
        let _ = write!(
            text,
            ", and {}/month more once the Recycle Bin releases the snapshots that wait",
            s.monthly_deferred
        );
    }
    let _ = write!(
        text,
        " (prices for {}: snapshots ${}/GiB-month, archived ${}/GiB-month)",
        s.prices.region, s.prices.snapshot_standard, s.prices.snapshot_archive
    );
    wrapped(out, &text, 2);
    for note in &s.notes {
        wrapped(out, &format!("  note: {note}"), 8);
    }
    let archived: Vec<&str> = s
        .by_image
        .values()
        .flat_map(|i| &i.archived_snapshots)
        .map(String::as_str)
        .collect();
    if !archived.is_empty() {
        let text = format!("  archived snapshots to delete: {}", archived.join(", "));
        wrapped(out, &text, 4);
    }
}

/// The short name of a decision's action, as the table's column shows it.
pub(crate) fn action_cell(action: Action) -> &'static str {
    match action {
        Action::Keep => "keep",
        Action::Deregister => "DEREG",
        Action::Deprecate => "DEPR",
        Action::Disable => "DISAB",
        Action::Enable => "ENABL",
    }
}

/// One decision: the image line, then its notes.
fn decision_lines(out: &mut String, plan: &Plan, d: &Decision) {
    let head = format!(
        "  {:<21}  {:>5}  {:<5}  {:<24}  ",
        truncate(&d.image_id, 21),
        age_days(plan, d),
        action_cell(d.action),
        truncate(&reason_cell(d), 24)
    );
    let room = WIDTH.saturating_sub(head.chars().count());
    let _ = writeln!(out, "{head}{}", truncate(&d.name, room));
    for note in decision_notes(d) {
        line(out, &format!("      {note}"));
    }
}

/// What an image shown on its own says beneath its line: who uses it, stale template
/// versions, the snapshots it keeps and why, its retirement, its Recycle Bin date, its
/// bundle.
pub(crate) fn decision_notes(d: &Decision) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(e) = &d.exception {
        notes.push(e.describe());
    }
    if d.action == Action::Keep && !d.used_by.is_empty() {
        let users: Vec<&str> = d.used_by.iter().map(|u| u.id.as_str()).collect();
        notes.push(format!("used by {}", users.join(", ")));
    }
    if !d.stale_versions.is_empty() {
        let stale: Vec<&str> = d.stale_versions.iter().map(|u| u.id.as_str()).collect();
        notes.push(format!("stale template versions: {}", stale.join(", ")));
    }
    for s in d
        .snapshots
        .iter()
        .filter(|s| s.action == CleanupAction::Retain)
    {
        let why = s.reason.as_ref().map_or("", |r| r.as_str());
        let sep = if s.shared_with.is_empty() { "" } else { ": " };
        notes.push(format!(
            "keeps {} ({why}{sep}{})",
            s.snapshot_id,
            s.shared_with.join(" ")
        ));
    }
    if let Some(t) = &d.thinning {
        let period = if t.period.is_empty() {
            String::new()
        } else {
            format!(", period {}", t.period)
        };
        notes.push(format!("window {}{period}", t.window()));
    }
    if let Some(t) = d.eligible_at {
        notes.push(format!("retiring: may go on from {}", format_instant(t)));
    }
    if let Some(f) = &d.recycle_bin {
        let wait = match f.snapshots {
            SnapshotWait::Deferred => "snapshots wait",
            SnapshotWait::RetainedBySnapshotRule => "snapshot rule too",
        };
        let until = format_instant(f.restorable_until);
        notes.push(format!("restorable until {until} ({wait})"));
    }
    if let Some(b) = &d.bundle {
        let verb = match b.action {
            CleanupAction::Delete => "deletes bundle",
            CleanupAction::Retain => "keeps bundle",
        };
        notes.push(format!("{verb} s3://{}", b.location));
        if b.tags_unknown {
            notes.push("  (tags unknown: decided at the sweep)".to_string());
        }
    }
    notes
}

/// Word-wraps `text` to [`WIDTH`], indenting continuation lines by `indent` spaces.
pub fn wrap(text: &str, indent: usize) -> String {
    let mut out = String::new();
    // Leading spaces are an indent of the first line, kept as given.
    let lead = text.len() - text.trim_start_matches(' ').len();
    let mut line = " ".repeat(lead);
    for word in text[lead..].split(' ') {
        let blank = line.chars().all(|c| c == ' ');
        if !blank && line.chars().count() + 1 + word.chars().count() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = " ".repeat(indent);
        } else if !blank {
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
        .filter(|(r, _)| !r.condemns())
        .map(|(r, n)| format!("{} {n}", r.as_str()))
        .collect();
    let total = s.deregister + s.keep + s.deprecate + s.disable + s.enable;
    let thinned = s.by_reason.get(&Reason::Thinned).copied().unwrap_or(0);
    let of_them = if thinned > 0 {
        format!(" ({thinned} thinned)")
    } else {
        String::new()
    };
    let mut out = format!(
        "plan at {}: {}, {} to deregister{of_them}, {} to keep",
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
    by_rule_line(s, &mut out);
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

/// With several (or named) rules, one line of counts per rule.
fn by_rule_line(s: &crate::planner::Summary, out: &mut String) {
    let named = s.by_rule.keys().any(|k| k != crate::policy::DEFAULT_RULE);
    if s.by_rule.len() > 1 || named {
        let rules: Vec<String> = s
            .by_rule
            .iter()
            .map(|(rule, c)| {
                let mut text = format!("{rule} {} ({} to deregister", c.images, c.deregister);
                if c.retire > 0 {
                    let _ = write!(text, ", {} to retire", c.retire);
                }
                text.push(')');
                text
            })
            .collect();
        out.push_str(&wrap(&format!("by rule: {}", rules.join(", ")), 9));
        out.push('\n');
    }
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
pub(crate) fn reconciled_lines(
    out: &mut String,
    r: &crate::app::report::RegionReport,
    dry_run: bool,
) {
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

/// Lets the streaming table write into a `String`.
struct Sink<'a>(&'a mut String);

impl std::io::Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renders a sweep report: per region the plan grouped by lineage (runs of alike images
/// folded), what did not simply succeed and why, then the totals, the storage freed and
/// the API calls.
pub fn sweep_table(report: &crate::app::report::SweepReport) -> String {
    let mut out = String::new();
    for r in &report.regions {
        let _ = writeln!(out, "== region {}", r.region);
        region_section(&mut out, r, report.dry_run);
    }
    totals_lines(&mut out, report);
    out
}

/// One region's part of a report: its failure, its plan (dry run) or outcomes per
/// lineage (real run), what was not deregistered, unfinished jobs, reconciled storage.
fn region_section(out: &mut String, r: &crate::app::report::RegionReport, dry_run: bool) {
    if let Some(e) = &r.error {
        wrapped(out, &format!("FAILED: {e}"), 8);
        if r.plan_detail.is_none() {
            return;
        }
    }
    match &r.plan_detail {
        Some(plan) if dry_run => {
            let _ = write_table(plan, r.savings.as_ref(), &mut Sink(out), true);
        }
        // A real run: what happened per lineage; the dry run shows the why.
        _ => {
            outcomes_by_group(out, r);
            if let Some(s) = &r.savings {
                savings_lines(out, s);
            }
        }
    }
    not_deregistered(out, r);
    unfinished_jobs(out, r);
    reconciled_lines(out, r, dry_run);
}

/// `web: 9 deregistered, 1 failed`, one line per lineage.
pub(crate) fn outcomes_by_group(out: &mut String, r: &crate::app::report::RegionReport) {
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
pub(crate) fn not_deregistered(out: &mut String, r: &crate::app::report::RegionReport) {
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
pub(crate) fn unfinished_jobs(out: &mut String, r: &crate::app::report::RegionReport) {
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
pub(crate) fn totals_lines(out: &mut String, report: &crate::app::report::SweepReport) {
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
         estimated saving {}/month; {} failures; {} ms",
        if report.dry_run { "dry run" } else { "sweep" },
        t.images,
        or_else(counts(&t.outcomes), "nothing to deregister"),
        or_else(counts(&t.jobs), "none"),
        t.snapshot_gib_deleted,
        t.monthly_saving,
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

/// Renders an organization sweep: per account a line, then its regions as a sweep's table
/// shows them; runs of accounts with nothing to do fold into one line.
pub fn org_table(report: &crate::app::org::OrgReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "== organization sweep {}", report.run);
    let accounts = account_facts(report);
    for row in account_rows(&accounts) {
        match row {
            AccountRow::Quiet(run) => wrapped(&mut out, &quiet_accounts_text(run), 6),
            AccountRow::Busy(id, facts) => account_lines(&mut out, report, id, facts),
        }
    }
    let _ = writeln!(out, "{}", org_totals_text(report, &accounts));
    out
}

/// Every account of an organization report with what its line says, in account order.
pub(crate) fn account_facts(report: &crate::app::org::OrgReport) -> Vec<(&String, AccountFacts)> {
    let dry_run = report
        .pairs
        .iter()
        .filter_map(|p| p.report.as_ref())
        .any(|r| r.dry_run);
    report
        .accounts
        .iter()
        .map(|(id, a)| (id, AccountFacts::of(report, id, a, dry_run)))
        .collect()
}

/// One row of an organization's summary: a run of quiet accounts, or one account.
pub(crate) enum AccountRow<'a> {
    /// At least [`FOLD_AT`] consecutive accounts with nothing to do and no failure.
    Quiet(&'a [(&'a String, AccountFacts)]),
    /// An account shown on its own.
    Busy(&'a str, &'a AccountFacts),
}

/// The organization's rows: runs of quiet accounts folded, the others one by one. The
/// table and the markdown share it.
pub(crate) fn account_rows<'a>(accounts: &'a [(&'a String, AccountFacts)]) -> Vec<AccountRow<'a>> {
    let mut rows = Vec::new();
    let mut i = 0;
    while i < accounts.len() {
        let quiet = accounts[i..]
            .iter()
            .take_while(|(_, f)| f.is_quiet())
            .count();
        if quiet >= FOLD_AT {
            rows.push(AccountRow::Quiet(&accounts[i..i + quiet]));
            i += quiet;
        } else {
            let (id, facts) = &accounts[i];
            rows.push(AccountRow::Busy(id.as_str(), facts));
            i += 1;
        }
    }
    rows
}

/// `... 4 accounts with nothing to deregister and no failures (...): A to B`, unwrapped.
pub(crate) fn quiet_accounts_text(run: &[(&String, AccountFacts)]) -> String {
    let images: usize = run.iter().map(|(_, f)| f.images).sum();
    format!(
        "... {} accounts with nothing to deregister and no failures ({images} images \
         evaluated): {} to {}",
        run.len(),
        run[0].0,
        run[run.len() - 1].0
    )
}

/// `6 accounts, 1 failures; estimated saving $10.00/month`.
pub(crate) fn org_totals_text(
    report: &crate::app::org::OrgReport,
    accounts: &[(&String, AccountFacts)],
) -> String {
    let saved: Usd = accounts.iter().map(|(_, f)| f.saving).sum();
    format!(
        "{} accounts, {} failures; estimated saving {saved}/month",
        accounts.len(),
        report.failures
    )
}

/// What the organization table says about one account.
pub(crate) struct AccountFacts {
    images: usize,
    /// Images deregistered, planned, or moved along their retirement.
    acted: usize,
    failures: usize,
    error: Option<String>,
    saving: Usd,
    dry_run: bool,
}

impl AccountFacts {
    fn of(
        report: &crate::app::org::OrgReport,
        id: &str,
        a: &crate::app::org::AccountSummary,
        dry_run: bool,
    ) -> Self {
        let reports = report
            .pairs
            .iter()
            .filter(|p| p.account == id)
            .filter_map(|p| p.report.as_ref());
        let acted = reports
            .map(|r| r.totals.outcomes.values().sum::<usize>())
            .sum();
        Self {
            images: a.images,
            acted,
            failures: a.failures,
            error: a.error.clone(),
            saving: a.monthly_saving,
            dry_run,
        }
    }

    fn is_quiet(&self) -> bool {
        self.acted == 0 && self.failures == 0 && self.error.is_none()
    }
}

/// One account: its line, then each of its regions with something to say.
fn account_lines(
    out: &mut String,
    report: &crate::app::org::OrgReport,
    id: &str,
    f: &AccountFacts,
) {
    wrapped(out, &account_text(id, f), 2);
    for (region, dry_run) in busy_regions(report, id) {
        let _ = writeln!(out, "== account {id} region {}", region.region);
        region_section(out, region, dry_run);
    }
}

/// `111111111111: 120 images evaluated, 55 to deregister or retire, ...`, unwrapped.
pub(crate) fn account_text(id: &str, f: &AccountFacts) -> String {
    let verb = if f.dry_run {
        "to deregister or retire"
    } else {
        "deregistered or retired"
    };
    format!(
        "{id}: {} images evaluated, {} {verb}, {} failures, estimated saving {}/month{}",
        f.images,
        f.acted,
        f.failures,
        f.saving,
        f.error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    )
}

/// The regions of account `id` with something to say (a failure, an image acted on, a
/// job), each with whether its run was a dry run.
pub(crate) fn busy_regions<'a>(
    report: &'a crate::app::org::OrgReport,
    id: &'a str,
) -> impl Iterator<Item = (&'a crate::app::report::RegionReport, bool)> + 'a {
    report
        .pairs
        .iter()
        .filter(move |p| p.account == id)
        .filter_map(|p| p.report.as_ref())
        .flat_map(|r| r.regions.iter().map(move |region| (region, r.dry_run)))
        .filter(|(region, _)| {
            region.error.is_some()
                || region.images.iter().any(|i| i.outcome.is_some())
                || !region.jobs.is_empty()
        })
}

#[cfg(test)]
mod tests {
    use super::{truncate, wrap, WIDTH};

    #[test]
    fn compact_table_folds_long_plain_runs_only() {
        use crate::model::{Image, Usage};

        use crate::inventory::Inventory;
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
        let full = super::plan_table_full(&plan);
        let compact = super::plan_table(&plan);
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

    /// A year-like estate in miniature, heavy on the Recycle Bin: `api` images enter the
    /// bin (their snapshots wait), three `web` images are in use, one shared, one excluded.
    pub(super) fn bin_heavy_plan() -> (crate::Plan, crate::pricing::Savings) {
        use crate::inventory::Inventory;
        use crate::model::{Image, SnapshotRef, UsageKind, UsageRef};
        use crate::recycle_bin::{BinResource, BinRule, BinRules, TagMatch};
        let now = crate::time::parse_instant("2026-11-26T00:00:00Z").unwrap();
        let mut images = Vec::new();
        for app in ["api", "web"] {
            for d in 0..60 {
                let created = now - chrono::TimeDelta::days(d) - chrono::TimeDelta::hours(2);
                let id = format!("ami-{app}{d:03}");
                let mut i = Image::new(&id, format!("{app}-{}", created.format("%Y%m%d")), created);
                i.tags.insert("app", app);
                i.snapshots.push(SnapshotRef {
                    id: format!("snap-{app}{d:03}"),
                    size_gib: Some(8),
                });
                if app == "web" && d == 45 {
                    i.public = true;
                }
                if app == "web" && d == 50 {
                    i.tags.insert("retain", "legal-hold");
                }
                images.push(i);
            }
        }
        let mut usage = crate::Usage::new();
        // Three neighbours in use: alike, yet each keeps its own lines.
        for d in 40..43 {
            usage.add(
                format!("ami-web{d:03}"),
                UsageRef {
                    kind: UsageKind::Instance,
                    id: format!("i-0demo{d} (stopped)"),
                },
            );
        }
        let mut inventory = Inventory::new(images, usage).unwrap();
        inventory.recycle_bin = BinRules(vec![BinRule {
            id: "api-14d".into(),
            resource: BinResource::Image,
            retention_days: 14,
            resource_tags: vec![TagMatch {
                key: "app".into(),
                value: Some("api".into()),
            }],
            exclude_tags: vec![],
            locked: false,
        }]);
        let policy = crate::Policy::from_json(
            r#"{"selection": {"exclude_tags": {"retain": "*"}},
                "retention": {"min_age_days": 30, "keep_count": 7, "group_by": {"tags": ["app"]}}}"#,
        )
        .unwrap();
        let plan = crate::plan(&policy, &inventory, now);
        let prices = crate::pricing::Prices::for_region("us-east-1", &Default::default());
        let savings = crate::pricing::estimate(&plan, &prices, &|_| false);
        (plan, savings)
    }

    /// Compares `actual` with the golden file `name` (under `tests/golden/`); with
    /// `UPDATE_GOLDEN=1` the file is rewritten instead.
    pub(super) fn golden(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(actual, expected, "{name} differs; actual:\n{actual}");
    }

    #[test]
    fn a_bin_heavy_plan_folds_into_a_screen() {
        let (plan, savings) = bin_heavy_plan();
        let mut out = Vec::new();
        super::write_plan_table(&plan, Some(&savings), &mut out).unwrap();
        let table = String::from_utf8(out).unwrap();
        golden("plan_bin_heavy.txt", &table);
        // The interesting images keep their own lines; the rest folds.
        for d in 40..43 {
            assert!(
                table.contains(&format!("used by i-0demo{d} (stopped)")),
                "{table}"
            );
        }
        assert!(table.contains("excluded_by_tag"));
        assert!(table.contains("shared"));
        assert!(table.contains(
            "  ... 30 images to deregister (expired): api-20261026 to api-20260927; snapshots\n      wait in the Recycle Bin until 2026-12-10; then saves $12.00/month"
        ), "{table}");
        assert!(table.contains("web (60 images: 35 keep, 25 deregister; saves $10.00/month)"));
        assert!(table.lines().count() < 40, "{table}");
        assert!(super::plan_table_full(&plan).lines().count() > 120);
        for line in table.lines() {
            assert!(line.chars().count() <= WIDTH, "{line:?}");
        }
    }

    /// A dry-run pair report of `plan` in `account`, us-east-1.
    fn pair(
        account: &str,
        plan: Option<crate::Plan>,
        error: Option<&str>,
    ) -> crate::app::org::PairReport {
        use crate::app::report::{ImageReport, Outcome, RegionReport, SweepReport};
        use crate::planner::Action;
        let report = plan.map(|plan| {
            let mut region = RegionReport::new("us-east-1");
            region.images = plan
                .decisions
                .iter()
                .map(|d| ImageReport {
                    image_id: d.image_id.clone(),
                    name: d.name.clone(),
                    rule: d.rule.clone(),
                    group: d.group.clone(),
                    action: d.action,
                    reasons: d.reasons.clone(),
                    outcome: (d.action != Action::Keep).then_some(Outcome::Planned),
                    error: None,
                    thinning: d.thinning.clone(),
                    exception: d.exception.clone(),
                })
                .collect();
            region.plan = Some(plan.summary.clone());
            region.plan_detail = Some(plan);
            region.price(&Default::default());
            let mut r = SweepReport {
                dry_run: true,
                now: "2026-11-26T00:00:00Z".into(),
                regions: vec![region],
                totals: Default::default(),
                api_calls: Default::default(),
                throttles: 0,
                elapsed_ms: 0,
                stopped: None,
            };
            r.total();
            r
        });
        crate::app::org::PairReport {
            error: error.map(str::to_string),
            report,
            ..crate::app::org::PairReport::new(account, "us-east-1")
        }
    }

    /// `n` images of one lineage, each in use: nothing folds.
    pub(super) fn in_use_plan(n: usize) -> crate::Plan {
        use crate::inventory::Inventory;
        use crate::model::{Image, UsageKind, UsageRef};
        let now = crate::time::parse_instant("2026-11-26T00:00:00Z").unwrap();
        let mut usage = crate::Usage::new();
        let images: Vec<Image> = (0..n)
            .map(|i| {
                let id = format!("ami-{i:08}");
                usage.add(
                    id.clone(),
                    UsageRef {
                        kind: UsageKind::Instance,
                        id: format!("i-{i:08} (running)"),
                    },
                );
                let created =
                    now - chrono::TimeDelta::days(40) - chrono::TimeDelta::minutes(i as i64);
                Image::new(&id, format!("web-{i:08}"), created)
            })
            .collect();
        let policy = crate::Policy::from_json(r#"{"retention": {"min_age_days": 30}}"#).unwrap();
        crate::plan(&policy, &Inventory::new(images, usage).unwrap(), now)
    }

    /// A real run in two regions: us-east-1 deregistered most of its plan, one image and
    /// one job failed, storage whose image is gone was reconciled; eu-west-1 could not be
    /// inventoried.
    pub(super) fn sweep_fixture() -> crate::app::report::SweepReport {
        use crate::app::report::{
            ImageReport, JobOutcome, JobReport, Outcome, RegionReport, SweepReport,
        };
        use crate::planner::{Action, Reason};
        let (plan, _) = bin_heavy_plan();
        let mut region = RegionReport::new("us-east-1");
        region.images = plan
            .decisions
            .iter()
            .filter(|d| d.action == Action::Deregister)
            .map(|d| {
                let failed = d.image_id == "ami-web043";
                ImageReport {
                    image_id: d.image_id.clone(),
                    name: d.name.clone(),
                    rule: d.rule.clone(),
                    group: d.group.clone(),
                    action: d.action,
                    reasons: vec![Reason::Expired],
                    outcome: Some(if failed {
                        Outcome::Failed
                    } else {
                        Outcome::Deregistered
                    }),
                    error: failed.then(|| "DeregisterImage: UnauthorizedOperation: denied".into()),
                    thinning: None,
                    exception: None,
                }
            })
            .collect();
        region.jobs = vec![JobReport {
            image_id: "ami-web044".into(),
            kind: crate::jobs::JobKind::DeleteSnapshot,
            target: "snap-web044".into(),
            outcome: JobOutcome::Failed,
            attempts: 5,
            deleted_objects: vec![],
            error: Some("InvalidSnapshot.InUse: still in use by ami-other".into()),
        }];
        region.plan = Some(plan.summary.clone());
        region.plan_detail = Some(plan);
        region.price(&Default::default());
        let mut failed = RegionReport::new("eu-west-1");
        failed.error = Some("DescribeImages: AccessDenied: not authorized".into());
        let mut r = SweepReport {
            dry_run: false,
            now: "2026-11-26T00:00:00Z".into(),
            regions: vec![region, failed],
            totals: Default::default(),
            api_calls: [("DeregisterImage".to_string(), 55u64)].into(),
            throttles: 2,
            elapsed_ms: 0,
            stopped: None,
        };
        r.total();
        r
    }

    /// One busy account, four with nothing to do, one that could not be entered.
    pub(super) fn org_fixture() -> crate::app::org::OrgReport {
        let (busy, _) = bin_heavy_plan();
        let empty = crate::Plan {
            decisions: vec![],
            summary: Default::default(),
            ..busy.clone()
        };
        let mut pairs = vec![pair("111111111111", Some(busy), None)];
        for a in [
            "222222222222",
            "333333333333",
            "444444444444",
            "555555555555",
        ] {
            pairs.push(pair(a, Some(empty.clone()), None));
        }
        pairs.push(pair(
            "666666666666",
            None,
            Some("the member role could not be assumed: AccessDenied"),
        ));
        crate::app::org::summarize("2026-11-26T00:00:00Z".into(), pairs)
    }

    #[test]
    fn an_organization_folds_quiet_accounts_and_shows_busy_ones() {
        let report = org_fixture();
        let table = super::org_table(&report);
        golden("org_dry_run.txt", &table);
        assert!(table.contains(
            "... 4 accounts with nothing to deregister and no failures (0 images evaluated):\n      222222222222 to 555555555555"
        ), "{table}");
        assert!(table.ends_with("6 accounts, 1 failures; estimated saving $10.00/month\n"));
        assert!(table.contains("== account 111111111111 region us-east-1"));
        assert!(table
            .contains("666666666666: 0 images evaluated, 0 to deregister or retire, 1 failures"));
        for line in table.lines() {
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
