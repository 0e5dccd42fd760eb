//! Markdown for pull-request comments and tickets (`--format markdown`): the table's
//! folded rows (shared with it, so both fold alike) as markdown tables, each group in a
//! `<details>` block, within GitHub's comment limit. What does not fit is counted and
//! summarised with where the whole report is.

use std::fmt::Write as _;

use super::{
    account_facts, account_rows, account_text, action_cell, age_days, busy_regions, decision_notes,
    fold_rows, folded_tail, group_header, groups, not_deregistered, org_totals_text,
    outcomes_by_group, plan_tail, reconciled_lines, savings_lines, totals_lines, unfinished_jobs,
    AccountRow, Row,
};
use crate::app::org::OrgReport;
use crate::app::report::{RegionReport, SweepReport};
use crate::planner::{Decision, Plan};
use crate::pricing::Savings;
use crate::time::format_instant;

/// GitHub's limit on an issue or pull-request comment's body, in characters.
pub const COMMENT_LIMIT: usize = 65_536;

/// Room kept for closing tags and the closing note once rows stop fitting.
const RESERVE: usize = 2_048;

/// A plan as markdown, at most [`COMMENT_LIMIT`] characters; `whole` says where the
/// whole plan is (shown when something does not fit).
pub fn plan(plan: &Plan, savings: Option<&Savings>, whole: &str) -> String {
    plan_within(plan, savings, whole, COMMENT_LIMIT)
}

/// A sweep report as markdown, at most [`COMMENT_LIMIT`] characters; `whole` says where
/// the JSON report is.
pub fn sweep(report: &SweepReport, whole: &str) -> String {
    sweep_within(report, whole, COMMENT_LIMIT)
}

/// An organization sweep as markdown, at most [`COMMENT_LIMIT`] characters; `whole` says
/// where the pairs' JSON reports are.
pub fn org(report: &OrgReport, whole: &str) -> String {
    org_within(report, whole, COMMENT_LIMIT)
}

fn plan_within(plan: &Plan, savings: Option<&Savings>, whole: &str, limit: usize) -> String {
    let mut doc = Doc::new(limit);
    doc.push(&format!(
        "### ami-sweeper plan at {}\n\n",
        format_instant(plan.now)
    ));
    plan_body(&mut doc, plan, savings);
    doc.finish(whole)
}

fn sweep_within(report: &SweepReport, whole: &str, limit: usize) -> String {
    let mut doc = Doc::new(limit);
    let kind = if report.dry_run { "dry run" } else { "sweep" };
    doc.push(&format!("### ami-sweeper {kind} at {}\n\n", report.now));
    let mut totals = String::new();
    totals_lines(&mut totals, report);
    doc.fenced(&totals);
    for r in &report.regions {
        if doc.push(&format!("#### Region {}\n\n", esc(&r.region))) {
            region(&mut doc, r, report.dry_run);
        } else {
            doc.left_images += region_images(r);
        }
    }
    doc.finish(whole)
}

fn org_within(report: &OrgReport, whole: &str, limit: usize) -> String {
    let mut doc = Doc::new(limit);
    doc.push(&format!(
        "### ami-sweeper organization sweep {}\n\n",
        esc(&report.run)
    ));
    let accounts = account_facts(report);
    doc.push(&format!(
        "**{}**\n\n",
        esc(&org_totals_text(report, &accounts))
    ));
    doc.push("| account | summary |\n|---|---|\n");
    let rows = account_rows(&accounts);
    for row in &rows {
        // The table's texts, without the part the first column already says.
        let (who, text) = match row {
            AccountRow::Quiet(run) => {
                let who = format!("{} accounts", run.len());
                let text = super::quiet_accounts_text(run);
                let rest = text
                    .strip_prefix(&format!("... {who} with "))
                    .unwrap_or(&text);
                (who, rest.to_string())
            }
            AccountRow::Busy(id, facts) => {
                let text = account_text(id, facts);
                let rest = text.strip_prefix(&format!("{id}: ")).unwrap_or(&text);
                (id.to_string(), rest.to_string())
            }
        };
        doc.row(&format!("| {} | {} |\n", esc(&who), esc(&text)), 0);
    }
    doc.push("\n");
    for row in &rows {
        let AccountRow::Busy(id, _) = row else {
            continue;
        };
        for (r, dry_run) in busy_regions(report, id) {
            let title = format!("account {id} region {}", r.region);
            if doc.push(&format!("<details><summary>{}</summary>\n\n", esc(&title))) {
                region(&mut doc, r, dry_run);
                doc.close("</details>\n\n");
            } else {
                doc.left_images += region_images(r);
            }
        }
    }
    doc.finish(whole)
}

/// A plan's totals (the table's own lines), then one `<details>` block per group.
fn plan_body(doc: &mut Doc, plan: &Plan, savings: Option<&Savings>) {
    doc.fenced(&plan_tail(plan, savings));
    for members in groups(plan) {
        group_block(doc, plan, members, savings);
    }
}

/// One group: its header as the block's summary, its folded rows as a table.
fn group_block(doc: &mut Doc, plan: &Plan, members: &[Decision], savings: Option<&Savings>) {
    let open = format!(
        "<details><summary>{}</summary>\n\n| image | age | action | reasons | name and notes |\n\
         |---|--:|---|---|---|\n",
        esc(&group_header(members, savings))
    );
    if !doc.push(&open) {
        doc.left_images += members.len();
        return;
    }
    for row in fold_rows(members, true) {
        let (images, line) = match row {
            Row::Folded { run, note } => (
                run.len(),
                format!(
                    "| {} images | | {} | {} | {} |\n",
                    run.len(),
                    action_cell(run[0].action),
                    esc(&reasons(&run[0]).join("+")),
                    esc(&folded_tail(run, &note, savings))
                ),
            ),
            Row::Single(d) => (1, single_row(plan, d)),
        };
        doc.row(&line, images);
    }
    doc.close("\n</details>\n\n");
}

/// An image on its own: its id, age, action, reasons, name and notes.
fn single_row(plan: &Plan, d: &Decision) -> String {
    let mut cell = esc(&d.name);
    for note in decision_notes(d) {
        let _ = write!(cell, "<br>{}", esc(&note));
    }
    format!(
        "| `{}` | {} | {} | {} | {cell} |\n",
        d.image_id.replace('`', ""),
        age_days(plan, d),
        action_cell(d.action),
        esc(&reasons(d).join(", ")),
    )
}

fn reasons(d: &Decision) -> Vec<&'static str> {
    d.reasons.iter().map(|r| r.as_str()).collect()
}

/// One region of a report: its failure, its plan (dry run) or outcomes (real run), then
/// what did not simply succeed, folded away.
fn region(doc: &mut Doc, r: &RegionReport, dry_run: bool) {
    if let Some(e) = &r.error {
        doc.push(&format!("**FAILED**: {}\n\n", esc(e)));
        if r.plan_detail.is_none() {
            return;
        }
    }
    match &r.plan_detail {
        Some(plan) if dry_run => plan_body(doc, plan, r.savings.as_ref()),
        _ => {
            let mut text = String::new();
            outcomes_by_group(&mut text, r);
            if let Some(s) = &r.savings {
                savings_lines(&mut text, s);
            }
            doc.fenced(&text);
        }
    }
    let mut rest = String::new();
    not_deregistered(&mut rest, r);
    unfinished_jobs(&mut rest, r);
    reconciled_lines(&mut rest, r, dry_run);
    if !rest.is_empty() {
        let open = "<details><summary>not done, unfinished jobs, storage whose image is gone\
                    </summary>\n\n";
        if doc.push(open) {
            doc.fenced(&rest);
            doc.close("</details>\n\n");
        } else {
            doc.left_lines += rest.lines().count();
        }
    }
}

/// The images a region's section shows (its plan's, or its report's).
fn region_images(r: &RegionReport) -> usize {
    r.plan_detail
        .as_ref()
        .map_or(r.images.len(), |p| p.decisions.len())
}

/// Markdown text of `s` safe in a table cell or a summary: no markup, no HTML, no `|`.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// A markdown body that stops taking anything new before its limit, counting what it
/// left out; closing tags always go in (the reserve holds them and the closing note).
struct Doc {
    out: String,
    limit: usize,
    /// Images in rows, groups and regions that did not fit.
    left_images: usize,
    /// Lines of text that did not fit.
    left_lines: usize,
}

impl Doc {
    fn new(limit: usize) -> Self {
        Self {
            out: String::new(),
            limit,
            left_images: 0,
            left_lines: 0,
        }
    }

    /// Whether something was already left out: nothing after it goes in, so what is
    /// shown is a prefix of the whole.
    fn cut(&self) -> bool {
        self.left_images + self.left_lines > 0
    }

    /// Appends `s` if it fits before the reserve and nothing was cut yet (bytes are never
    /// fewer than characters, so this errs on the safe side).
    fn put(&mut self, s: &str) -> bool {
        let fits = !self.cut() && self.out.len() + s.len() + RESERVE <= self.limit;
        if fits {
            self.out.push_str(s);
        }
        fits
    }

    /// Appends structure (a heading, an opening tag); counts its lines when it is cut.
    fn push(&mut self, s: &str) -> bool {
        let fits = self.put(s);
        if !fits {
            self.left_lines += s.lines().count().max(1);
        }
        fits
    }

    /// Appends a closing tag for something [`Doc::push`] opened: always, within the reserve.
    fn close(&mut self, s: &str) {
        self.out.push_str(s);
    }

    /// Appends a row standing for `images` images, or counts them as left out.
    fn row(&mut self, line: &str, images: usize) {
        if !self.put(line) {
            self.left_images += images;
        }
    }

    /// Appends `text` in a plain code block, line by line while it fits.
    fn fenced(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if !self.push("```text\n") {
            self.left_lines += text.lines().count();
            return;
        }
        for line in text.lines() {
            if !self.put(&format!("{line}\n")) {
                self.left_lines += 1;
            }
        }
        self.close("```\n\n");
    }

    /// The body, with a closing note saying what did not fit and where the whole is.
    fn finish(mut self, whole: &str) -> String {
        if self.cut() {
            let mut note = format!(
                "**Not shown**, to stay within GitHub's {COMMENT_LIMIT}-character comment \
                 limit: {} images",
                self.left_images
            );
            if self.left_lines > 0 {
                let _ = write!(note, " and {} lines", self.left_lines);
            }
            let _ = write!(note, ". {}", esc(whole));
            let room = self.limit.saturating_sub(self.out.len() + 1);
            let cut: String = note.chars().take(room).collect();
            self.out.push_str(&cut);
            self.out.push('\n');
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{bin_heavy_plan, golden, org_fixture, sweep_fixture};
    use super::COMMENT_LIMIT;

    #[test]
    fn a_plan_folds_like_the_table_into_details_blocks() {
        let (plan, savings) = bin_heavy_plan();
        let md = super::plan(&plan, Some(&savings), "whole: `--format json`");
        golden("plan_bin_heavy.md", &md);
        // The table's folded runs, one row each; the interesting images on their own.
        assert!(md.contains(
            "| 30 images | | DEREG | expired | api-20261026 to api-20260927; snapshots wait in the Recycle Bin until 2026-12-10; then saves $12.00/month |"
        ), "{md}");
        assert!(md.contains("<br>used by i-0demo40 (stopped)"), "{md}");
        assert_eq!(md.matches("<details>").count(), 2);
        assert_eq!(md.matches("</details>").count(), 2);
        assert!(!md.contains("Not shown"));
    }

    #[test]
    fn a_sweep_report_shows_failures_and_folds_the_rest() {
        let report = sweep_fixture();
        let md = super::sweep(&report, "The whole report: s3://r/reports/x/report.json");
        golden("sweep_report.md", &md);
        assert!(md.starts_with("### ami-sweeper sweep at "), "{md}");
        assert!(md.contains("**FAILED**: "), "{md}");
        assert!(md.contains("not deregistered after all:"), "{md}");
    }

    #[test]
    fn an_organization_summary_folds_quiet_accounts() {
        let report = org_fixture();
        let md = super::org(&report, "The pairs' reports: s3://r/reports/run/");
        golden("org_dry_run.md", &md);
        assert!(md.contains("| 4 accounts | nothing to deregister and no failures (0 images evaluated): 222222222222 to 555555555555 |"), "{md}");
        assert!(
            md.contains(
                "| 666666666666 | 0 images evaluated, 0 to deregister or retire, 1 failures"
            ),
            "{md}"
        );
        assert!(
            md.contains("<details><summary>account 111111111111 region us-east-1</summary>"),
            "{md}"
        );
    }

    /// Over the limit, rows stop, the tags stay balanced, and the note says how many
    /// images were left out and where the whole plan is.
    #[test]
    fn what_does_not_fit_is_summarised_with_the_whole_reports_location() {
        let (plan, savings) = bin_heavy_plan();
        let small = super::plan_within(&plan, Some(&savings), "see s3://b/k.json", 3_000);
        assert!(small.len() <= 3_000, "{}", small.len());
        assert_eq!(
            small.matches("<details>").count(),
            small.matches("</details>").count()
        );
        assert_eq!(small.matches("```").count() % 2, 0);
        assert!(
            small
                .contains("**Not shown**, to stay within GitHub's 65536-character comment limit: "),
            "{small}"
        );
        assert!(small.trim_end().ends_with("see s3://b/k.json"), "{small}");
        // A plan far beyond the limit: every image on its own line (all in use).
        let big = super::super::tests::in_use_plan(20_000);
        let md = super::plan(&big, None, "whole: s3://b/k.json");
        assert!(
            md.chars().count() <= COMMENT_LIMIT,
            "{}",
            md.chars().count()
        );
        let shown = md.matches("| `ami-").count();
        let left: usize = md
            .split("limit: ")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse().ok())
            .expect("a count of images not shown");
        assert_eq!(shown + left, 20_000, "every image is shown or counted");
        assert!(md.trim_end().ends_with("whole: s3://b/k.json"));
    }

    #[test]
    fn cells_cannot_break_the_table_or_inject_html() {
        assert_eq!(super::esc("a|b<script>*x*"), "a\\|b&lt;script&gt;\\*x\\*");
    }
}
