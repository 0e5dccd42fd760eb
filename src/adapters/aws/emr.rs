//! EMR: clusters that can still launch nodes from a custom image.

use std::sync::Arc;

use aws_sdk_emr::types::{ClusterState, InstanceCollectionType};

use crate::adapters::aws::meter::{source_error, Meter};
use crate::adapters::aws::metered::Metered;
use crate::adapters::aws::ApiCalls;
use crate::error::{from_sdk, AwsError};
use crate::fields::{emr_user, EMR_LIVE_STATES};
use crate::model::Usage;

/// The EMR adapter.
#[derive(Clone, Debug)]
pub struct Emr(Metered<aws_sdk_emr::Client>);

/// The permissions the EMR source needs, for its errors.
const NEEDS: &str =
    "elasticmapreduce:ListClusters, DescribeCluster, ListInstanceGroups and ListInstanceFleets";

impl Emr {
    /// Wraps a client; every call is counted in `calls`.
    pub fn new(client: aws_sdk_emr::Client, calls: Arc<ApiCalls>) -> Self {
        Self(Metered::new(client, calls))
    }

    /// The same adapter, its reads metered by `meter` (the (account, Region)'s EMR pacer).
    pub fn metered(&self, meter: Meter) -> Self {
        Self(self.0.metered(meter))
    }

    /// The images of clusters that can still launch nodes (`STARTING`, `BOOTSTRAPPING`,
    /// `RUNNING`, `WAITING`): each cluster's `CustomAmiId`, and each instance group's or
    /// fleet instance type's.
    pub async fn cluster_usage(&self) -> Result<Usage, AwsError> {
        let clusters = self
            .0
            .meter()
            .whole("ListClusters", || self.live_clusters())
            .await
            .map_err(|e| source_error("EMR clusters", NEEDS, e))?;
        let mut usage = Usage::new();
        for (id, name) in &clusters {
            let found = self
                .0
                .meter()
                .whole("DescribeCluster", || self.cluster_images(id))
                .await
                .map_err(|e| source_error("EMR clusters", NEEDS, e))?;
            for (image, what) in found {
                usage.add(image, emr_user(id, name.as_deref(), &what));
            }
        }
        Ok(usage)
    }

    /// The ids and names of clusters in a live state (all pages).
    async fn live_clusters(&self) -> Result<Vec<(String, Option<String>)>, AwsError> {
        let mut out = Vec::new();
        let mut list = self.0.reader().list_clusters();
        for s in EMR_LIVE_STATES {
            list = list.cluster_states(ClusterState::from(s));
        }
        let mut pages = list.into_paginator().send();
        while let Some(page) = pages.next().await {
            self.0.record("ListClusters");
            let resp = page.map_err(|e| from_sdk("ListClusters", e))?;
            self.0
                .meter()
                .page("ListClusters", resp.marker().is_some())
                .await?;
            for c in resp.clusters() {
                // The filter is the service's; the state is checked again here, so a
                // cluster listed in another state never counts by mistake (nor is missed).
                let state = c.status().and_then(|s| s.state()).map(|s| s.as_str());
                if state.is_some_and(|s| !crate::fields::emr_cluster_is_live(s)) {
                    continue;
                }
                if let Some(id) = c.id() {
                    out.push((id.to_string(), c.name().map(str::to_string)));
                }
            }
        }
        Ok(out)
    }

    /// One cluster's images: its own `CustomAmiId`, then its groups' or its fleets'
    /// (as its instance collection type says), each with what names it.
    async fn cluster_images(&self, id: &str) -> Result<Vec<(String, String)>, AwsError> {
        self.0.record("DescribeCluster");
        let resp = self
            .0
            .reader()
            .describe_cluster()
            .cluster_id(id)
            .send()
            .await
            .map_err(|e| from_sdk("DescribeCluster", e))?;
        let mut out = Vec::new();
        let cluster = resp.cluster();
        if let Some(image) = cluster.and_then(|c| c.custom_ami_id()) {
            out.push((image.to_string(), "cluster".to_string()));
        }
        let fleets = cluster.and_then(|c| c.instance_collection_type())
            == Some(&InstanceCollectionType::InstanceFleet);
        if fleets {
            out.extend(self.fleet_images(id).await?);
        } else {
            out.extend(self.group_images(id).await?);
        }
        Ok(out)
    }

    async fn group_images(&self, id: &str) -> Result<Vec<(String, String)>, AwsError> {
        let mut out = Vec::new();
        let mut pages = self
            .0
            .reader()
            .list_instance_groups()
            .cluster_id(id)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.0.record("ListInstanceGroups");
            let resp = page.map_err(|e| from_sdk("ListInstanceGroups", e))?;
            self.0
                .meter()
                .page("ListInstanceGroups", resp.marker().is_some())
                .await?;
            for g in resp.instance_groups() {
                if let Some(image) = g.custom_ami_id() {
                    let group = g.name().or(g.id()).unwrap_or("instance group");
                    out.push((image.to_string(), format!("group {group}")));
                }
            }
        }
        Ok(out)
    }

    async fn fleet_images(&self, id: &str) -> Result<Vec<(String, String)>, AwsError> {
        let mut out = Vec::new();
        let mut pages = self
            .0
            .reader()
            .list_instance_fleets()
            .cluster_id(id)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.0.record("ListInstanceFleets");
            let resp = page.map_err(|e| from_sdk("ListInstanceFleets", e))?;
            self.0
                .meter()
                .page("ListInstanceFleets", resp.marker().is_some())
                .await?;
            for f in resp.instance_fleets() {
                let fleet = f.name().or(f.id()).unwrap_or("instance fleet");
                for spec in f.instance_type_specifications() {
                    if let Some(image) = spec.custom_ami_id() {
                        let t = spec.instance_type().unwrap_or("instance type");
                        out.push((image.to_string(), format!("fleet {fleet} {t}")));
                    }
                }
            }
        }
        Ok(out)
    }
}
