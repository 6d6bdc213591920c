//! An instance's shape: what every instance the pipeline launches is made
//! of besides its image, written the same way for the builder, an
//! environment's instances and a task's.

use super::check::{self, Checked};

/// What an instance is made of, besides its image and user-data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceShape {
    /// Its family and size: what it can do and what it costs.
    pub instance_type: String,
    /// The firewall rules it runs under (`sg-...` ids).
    pub security_groups: Vec<String>,
    /// The IAM role it acts as (an instance profile's name), for code on
    /// the instance that calls AWS.
    pub instance_profile: Option<String>,
    /// An EC2 key pair, so a human can log in when something needs a look.
    pub key_name: Option<String>,
}

impl InstanceShape {
    /// Checks the four settings as written under `section` (e.g. `build`,
    /// `environments.prod1`).
    pub(super) fn check(
        section: &str,
        instance_type: String,
        security_groups: Vec<String>,
        instance_profile: Option<String>,
        key_name: Option<String>,
    ) -> Checked<InstanceShape> {
        check::instance_type(&format!("{section}.instance_type"), &instance_type)?;
        for sg in &security_groups {
            check::prefixed(&format!("{section}.security_groups"), sg, "sg-")?;
        }
        Ok(InstanceShape {
            instance_type,
            security_groups,
            instance_profile,
            key_name,
        })
    }

    /// The same shape with another instance type (a task that needs a
    /// bigger machine than its environment's).
    pub fn with_type(&self, instance_type: &str) -> InstanceShape {
        InstanceShape {
            instance_type: instance_type.to_string(),
            ..self.clone()
        }
    }
}

pub(super) fn default_instance_type() -> String {
    "t3.micro".to_string()
}
