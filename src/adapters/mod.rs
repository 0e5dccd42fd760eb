//! Implementations of the ports and readers of outside formats: the AWS SDK (one file per
//! service), the AWS CLI's JSON for the offline planner, and an in-process queue.

pub mod aws;
pub mod awscli;
pub mod local_queue;
pub mod memory;
