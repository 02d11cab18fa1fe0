//! The pool fields berth uses (`PoolAddParameter` subset).

use crate::common::{
    batch_enum, ContainerRegistry, ElevationLevel, EnvironmentSetting, Secret,
    TaskContainerSettings, UserIdentity,
};
use serde::{Deserialize, Serialize};

batch_enum!(
    ContainerType {
        DockerCompatible => "dockerCompatible",
        CriCompatible => "criCompatible",
    }
);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerConfiguration {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub container_type: Option<ContainerType>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_image_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_registries: Vec<ContainerRegistry>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_configuration: Option<ContainerConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_reference: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_agent_sku_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartTask {
    pub command_line: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_settings: Option<TaskContainerSettings>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_settings: Vec<EnvironmentSetting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_identity: Option<UserIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_task_retry_count: Option<i32>,
    /// Batch's default is `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for_success: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_files: Vec<crate::files::ResourceFile>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinuxUserConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing)]
    pub ssh_private_key: Option<Secret>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserAccount {
    pub name: String,
    #[serde(default, skip_serializing)]
    pub password: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elevation_level: Option<ElevationLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_user_configuration: Option<LinuxUserConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows_user_configuration: Option<serde_json::Value>,
}

batch_enum!(
    /// `taskSchedulingPolicy.nodeFillType` (pool mode): `spread` gives each task to the
    /// least-used node; `pack` fills one node before the next.
    NodeFillType {
        Spread => "spread",
        Pack => "pack",
    }
);

/// `taskSchedulingPolicy`: how a pool's service places tasks on its nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSchedulingPolicy {
    /// Default `spread`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_fill_type: Option<NodeFillType>,
}

batch_enum!(
    /// berth's own `berthLeaseProfile` (pool mode): the node lease timers
    /// (`node_protocol::Timers`): `default`, `fast`, or `keep` (never self-fence or requeue).
    LeaseProfile {
        Default => "default",
        Fast => "fast",
        Keep => "keep",
    }
);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolSpec {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_slots_per_node: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine_configuration: Option<VirtualMachineConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_task: Option<StartTask>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_accounts: Vec<UserAccount>,
    /// Pool mode: how the service places tasks (a standalone node is its own pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_scheduling_policy: Option<TaskSchedulingPolicy>,
    /// berth's own, pool mode: the node lease timers' profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub berth_lease_profile: Option<LeaseProfile>,
}

impl PoolSpec {
    /// `taskSchedulingPolicy.nodeFillType`, default `spread`.
    pub fn node_fill_type(&self) -> NodeFillType {
        self.task_scheduling_policy
            .as_ref()
            .and_then(|p| p.node_fill_type)
            .unwrap_or(NodeFillType::Spread)
    }

    /// `berthLeaseProfile`, default `default`.
    pub fn lease_profile(&self) -> LeaseProfile {
        self.berth_lease_profile.unwrap_or(LeaseProfile::Default)
    }

    /// The pool `berth run` uses without `--pool`: a one-slot container pool, as Batch's defaults.
    pub fn default_for_run() -> Self {
        PoolSpec {
            id: "berthpool".into(),
            virtual_machine_configuration: Some(VirtualMachineConfiguration {
                container_configuration: Some(ContainerConfiguration {
                    container_type: Some(ContainerType::DockerCompatible),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn container_configuration(&self) -> Option<&ContainerConfiguration> {
        self.virtual_machine_configuration
            .as_ref()?
            .container_configuration
            .as_ref()
    }

    pub fn task_slots(&self) -> u32 {
        self.task_slots_per_node.unwrap_or(1).max(1) as u32
    }

    pub fn user(&self, name: &str) -> Option<&UserAccount> {
        self.user_accounts.iter().find(|u| u.name == name)
    }
}
