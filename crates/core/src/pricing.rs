//! What the storage a plan deletes costs: a small table of list prices, and the estimated
//! monthly saving per image, group and plan.
//!
//! The figures are estimates and say so: an EBS snapshot's size is its volume's size, an
//! upper bound (standard-tier snapshots are incremental and billed for the blocks they
//! alone hold), and an archived snapshot deleted within 90 days of archiving is still
//! billed for the rest of those days.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};

use crate::planner::{Action, CleanupAction, Plan};
use crate::policy::PriceOverride;

/// Where the built-in prices come from, printed with every estimate.
pub const SOURCE: &str = "AWS on-demand list prices in USD per GiB-month: Amazon EBS \
     pricing (snapshots, standard and archive tiers) and Amazon S3 pricing (S3 Standard, \
     first 50 TB), as published in June 2024 (us-east-1's archive rate, $0.0125, as the \
     EBS User Guide's \"Pricing and billing for archiving Amazon EBS snapshots\" states \
     it); not fetched at run time: set cost.price_per_gib_month for negotiated rates";

/// One region's prices: snapshot standard, snapshot archive, S3 Standard.
struct RegionPrices {
    region: &'static str,
    standard: f64,
    archive: f64,
    s3: f64,
}

/// The built-in table; a region not listed is priced as us-east-1 (and says so).
const TABLE: &[RegionPrices] = &[
    RegionPrices {
        region: "us-east-1",
        standard: 0.05,
        archive: 0.0125,
        s3: 0.023,
    },
    RegionPrices {
        region: "us-east-2",
        standard: 0.05,
        archive: 0.0125,
        s3: 0.023,
    },
    RegionPrices {
        region: "us-west-1",
        standard: 0.055,
        archive: 0.01375,
        s3: 0.026,
    },
    RegionPrices {
        region: "us-west-2",
        standard: 0.05,
        archive: 0.0125,
        s3: 0.023,
    },
    RegionPrices {
        region: "eu-west-1",
        standard: 0.05,
        archive: 0.0125,
        s3: 0.023,
    },
    RegionPrices {
        region: "eu-central-1",
        standard: 0.054,
        archive: 0.0135,
        s3: 0.0245,
    },
    RegionPrices {
        region: "ap-northeast-1",
        standard: 0.05,
        archive: 0.0125,
        s3: 0.025,
    },
    RegionPrices {
        region: "ap-southeast-2",
        standard: 0.055,
        archive: 0.01375,
        s3: 0.025,
    },
    RegionPrices {
        region: "sa-east-1",
        standard: 0.068,
        archive: 0.017,
        s3: 0.0405,
    },
];

/// A snapshot's storage tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The default tier: incremental, billed for changed blocks.
    Standard,
    /// The archive tier: a full copy, billed at least 90 days from archiving.
    Archive,
}

/// An amount of US dollars (a month's worth, in estimates), kept in hundredths of a cent
/// so that sums are exact; serialized as a number of dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(u64);

impl Usd {
    /// Zero dollars.
    pub const ZERO: Usd = Usd(0);

    /// `gib` GiB at `price` dollars per GiB, rounded to a hundredth of a cent.
    pub fn of(gib: u64, price: f64) -> Usd {
        Usd((gib as f64 * price * 10_000.0).round() as u64)
    }

    /// The amount in dollars.
    pub fn dollars(self) -> f64 {
        self.0 as f64 / 10_000.0
    }

    /// Whether nothing is saved.
    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }
}

impl std::ops::Add for Usd {
    type Output = Usd;
    fn add(self, o: Usd) -> Usd {
        Usd(self.0.saturating_add(o.0))
    }
}

impl std::ops::AddAssign for Usd {
    fn add_assign(&mut self, o: Usd) {
        *self = *self + o;
    }
}

impl std::iter::Sum for Usd {
    fn sum<I: Iterator<Item = Usd>>(iter: I) -> Usd {
        iter.fold(Usd::ZERO, |a, b| a + b)
    }
}

/// `$1,234.56`; amounts under a cent but above zero print as `<$0.01`.
impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 > 0 && self.0 < 100 {
            return f.write_str("<$0.01");
        }
        let cents = (self.0 + 50) / 100;
        let whole = (cents / 100).to_string();
        let mut grouped = String::new();
        for (i, c) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        write!(f, "${grouped}.{:02}", cents % 100)
    }
}

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.dollars())
    }
}

/// The prices one region's estimate uses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prices {
    /// The region priced.
    pub region: String,
    /// Snapshot storage, standard tier, USD per GiB-month.
    pub snapshot_standard: f64,
    /// Snapshot storage, archive tier, USD per GiB-month.
    pub snapshot_archive: f64,
    /// S3 Standard, USD per GiB-month (instance-store bundles).
    pub s3_standard: f64,
    /// Where the prices come from (the table's source, or the policy's override).
    pub source: String,
}

impl Prices {
    /// The table's prices for `region` (us-east-1's when the region is not listed), with
    /// the policy's `cost.price_per_gib_month` laid over them.
    pub fn for_region(region: &str, overrides: &PriceOverride) -> Prices {
        let listed = TABLE.iter().find(|p| p.region == region);
        let row = listed.unwrap_or(&TABLE[0]);
        let mut source = match listed {
            Some(_) => SOURCE.to_string(),
            None => format!("{region} is not in the built-in table: priced as us-east-1; {SOURCE}"),
        };
        let overridden = [
            overrides.snapshot_standard,
            overrides.snapshot_archive,
            overrides.s3_standard,
        ];
        if overridden.iter().any(Option::is_some) {
            source = format!("the policy's cost.price_per_gib_month, else {source}");
        }
        Prices {
            region: region.to_string(),
            snapshot_standard: overrides.snapshot_standard.unwrap_or(row.standard),
            snapshot_archive: overrides.snapshot_archive.unwrap_or(row.archive),
            s3_standard: overrides.s3_standard.unwrap_or(row.s3),
            source,
        }
    }

    /// A month of `gib` GiB of snapshot storage in `tier`.
    pub fn snapshot(&self, gib: u64, tier: Tier) -> Usd {
        match tier {
            Tier::Standard => Usd::of(gib, self.snapshot_standard),
            Tier::Archive => Usd::of(gib, self.snapshot_archive),
        }
    }

    /// A month of `gib` GiB of an instance-store bundle in S3 Standard.
    pub fn bundle(&self, gib: u64) -> Usd {
        Usd::of(gib, self.s3_standard)
    }
}

/// One image's estimated saving.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImageSaving {
    /// Per month, from the storage this run deletes.
    pub monthly: Usd,
    /// Per month, from snapshots that wait for the image to leave the Recycle Bin.
    #[serde(skip_serializing_if = "Usd::is_zero")]
    pub monthly_deferred: Usd,
    /// Its snapshots to delete that are in the archive tier (billed for at least 90 days
    /// from archiving, whenever they are deleted).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub archived_snapshots: Vec<String>,
}

/// A plan's estimated monthly saving, per image, per group and in total.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Savings {
    /// Per month, from the storage the plan deletes.
    pub monthly: Usd,
    /// Per month, once the Recycle Bin releases the snapshots that wait.
    pub monthly_deferred: Usd,
    /// By group (lineage).
    pub by_group: BTreeMap<String, Usd>,
    /// By image id, for images with storage to delete or deferred.
    pub by_image: BTreeMap<String, ImageSaving>,
    /// The prices used.
    pub prices: Prices,
    /// What the estimate cannot know, in plain words.
    pub notes: Vec<String>,
}

/// The upper-bound note every estimate carries.
pub const UPPER_BOUND: &str = "EBS snapshot sizes are their volumes' sizes, an upper \
     bound: standard-tier snapshots are incremental, billed only for the blocks no other \
     snapshot holds";

/// The 90-day note for archived snapshots.
pub const ARCHIVE_MINIMUM: &str = "an archived snapshot deleted within 90 days of \
     archiving is still billed for the rest of those 90 days";

/// Prices the storage `plan` deletes (each snapshot once, with the first image that lists
/// it); `archived` says which snapshots are in the archive tier. Bundles' sizes are not
/// listed in a plan, so bundles count as zero and a note says so.
pub fn estimate(plan: &Plan, prices: &Prices, archived: &dyn Fn(&str) -> bool) -> Savings {
    let mut seen = rustc_hash::FxHashSet::default();
    let mut by_image = BTreeMap::new();
    let mut by_group: BTreeMap<String, Usd> = BTreeMap::new();
    let (mut any_archived, mut any_bundle) = (false, false);
    for d in plan
        .decisions
        .iter()
        .filter(|d| d.action == Action::Deregister)
    {
        let mut saving = ImageSaving::default();
        for s in &d.snapshots {
            if !seen.insert(s.snapshot_id.as_str()) {
                continue;
            }
            let gib = s.size_gib.unwrap_or(0);
            let tier = if archived(&s.snapshot_id) {
                Tier::Archive
            } else {
                Tier::Standard
            };
            match (s.action, s.delete_after.is_some()) {
                (CleanupAction::Delete, _) => {
                    saving.monthly += prices.snapshot(gib, tier);
                    if tier == Tier::Archive {
                        saving.archived_snapshots.push(s.snapshot_id.clone());
                    }
                }
                (CleanupAction::Retain, true) => {
                    saving.monthly_deferred += prices.snapshot(gib, tier)
                }
                (CleanupAction::Retain, false) => {}
            }
        }
        any_bundle |= d
            .bundle
            .as_ref()
            .is_some_and(|b| b.action == CleanupAction::Delete);
        any_archived |= !saving.archived_snapshots.is_empty();
        if saving != ImageSaving::default() {
            *by_group.entry(d.group.clone()).or_default() += saving.monthly;
            by_image.insert(d.image_id.clone(), saving);
        }
    }
    let mut notes = vec![UPPER_BOUND.to_string()];
    if any_archived {
        notes.push(ARCHIVE_MINIMUM.to_string());
    }
    if any_bundle {
        notes.push(format!(
            "instance-store bundles are not included: a plan does not list their sizes (S3 \
             Standard here is ${}/GiB-month)",
            prices.s3_standard
        ));
    }
    Savings {
        monthly: by_image.values().map(|s| s.monthly).sum(),
        monthly_deferred: by_image.values().map(|s| s.monthly_deferred).sum(),
        by_group,
        by_image,
        prices: prices.clone(),
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_have_their_own_prices() {
        let p = Prices::for_region("us-east-1", &PriceOverride::default());
        assert_eq!(p.snapshot(100, Tier::Standard), Usd::of(1, 5.0));
        assert_eq!(p.snapshot(100, Tier::Archive).to_string(), "$1.25");
        assert_eq!(p.bundle(100).to_string(), "$2.30");
    }

    #[test]
    fn regions_have_their_own_prices_and_unknown_ones_say_so() {
        let none = PriceOverride::default();
        let sp = Prices::for_region("sa-east-1", &none);
        assert_eq!(sp.snapshot(1000, Tier::Standard).to_string(), "$68.00");
        assert_eq!(sp.source, SOURCE);
        let far = Prices::for_region("xx-nowhere-9", &none);
        assert_eq!(far.snapshot_standard, 0.05);
        assert!(far
            .source
            .starts_with("xx-nowhere-9 is not in the built-in table"));
    }

    #[test]
    fn the_policy_overrides_the_table_price_by_price() {
        let o = PriceOverride {
            snapshot_standard: Some(0.04),
            ..Default::default()
        };
        let p = Prices::for_region("eu-central-1", &o);
        assert_eq!(p.snapshot(1000, Tier::Standard).to_string(), "$40.00");
        // The prices not overridden stay the region's.
        assert_eq!(p.snapshot(1000, Tier::Archive).to_string(), "$13.50");
        assert!(p
            .source
            .starts_with("the policy's cost.price_per_gib_month"));
    }

    fn image(id: &str, days: i64, snaps: &[(&str, u64)]) -> crate::Image {
        let now = crate::time::parse_instant("2026-11-26T00:00:00Z").unwrap();
        let mut i = crate::Image::new(id, id, now - chrono::TimeDelta::days(days));
        i.snapshots = snaps
            .iter()
            .map(|(s, g)| crate::model::SnapshotRef {
                id: s.to_string(),
                size_gib: Some(*g),
            })
            .collect();
        i
    }

    #[test]
    fn estimate_counts_each_snapshot_once_and_marks_archived_ones() {
        let now = crate::time::parse_instant("2026-11-26T00:00:00Z").unwrap();
        let images = vec![
            image("ami-new", 1, &[("snap-n", 8)]),
            image("ami-a", 100, &[("snap-a", 100), ("snap-shared", 10)]),
            image("ami-b", 200, &[("snap-shared", 10), ("snap-old", 40)]),
        ];
        let policy = crate::Policy::from_json(r#"{"retention": {"min_age_days": 30}}"#).unwrap();
        let inventory = crate::Inventory::new(images, crate::Usage::new()).unwrap();
        let plan = crate::plan(&policy, &inventory, now);
        let prices = Prices::for_region("us-east-1", &PriceOverride::default());
        let s = estimate(&plan, &prices, &|id| id == "snap-old");
        // 100 + 10 GiB standard, 40 GiB archived: $5.50 + $0.50.
        assert_eq!(s.monthly.to_string(), "$6.00");
        let a = &s.by_image["ami-a"];
        let b = &s.by_image["ami-b"];
        assert_eq!(a.monthly + b.monthly, s.monthly);
        assert_eq!(b.archived_snapshots, vec!["snap-old".to_string()]);
        assert!(!s.by_image.contains_key("ami-new"));
        assert_eq!(s.by_group["*"], s.monthly);
        assert_eq!(
            s.notes,
            vec![UPPER_BOUND.to_string(), ARCHIVE_MINIMUM.to_string()]
        );
        // Nothing archived: no 90-day note.
        let plain = estimate(&plan, &prices, &|_| false);
        assert_eq!(plain.notes, vec![UPPER_BOUND.to_string()]);
        assert_eq!(plain.monthly.to_string(), "$7.50");
    }

    #[test]
    fn amounts_print_as_money() {
        assert_eq!(Usd::of(1_234_567, 1.0).to_string(), "$1,234,567.00");
        assert_eq!(Usd::of(1, 0.0001).to_string(), "<$0.01");
        assert_eq!(Usd::ZERO.to_string(), "$0.00");
        assert_eq!(Usd::of(8, 0.05).dollars(), 0.4);
    }
}
