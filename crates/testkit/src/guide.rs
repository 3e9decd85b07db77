//! The manifests of the user guide (docs: sharded backup and restore), verbatim where the
//! guide gives whole objects, and the objects they need (storage, clusters) around them.

/// The object storage the guide's backups go to (a filesystem one, under `/tmp`).
pub const STORAGE: &str = "apiVersion: stackgres.io/v1beta1
kind: SGObjectStorage
metadata:
  name: my-backup-storage
spec:
  type: filesystem
  filesystem:
    path: /tmp/shardvault-test-objects
";

/// The sharded cluster the guide backs up.
pub const CLUSTER: &str = "apiVersion: stackgres.io/v1alpha1
kind: SGShardedCluster
metadata:
  name: my-sharded-cluster
spec:
  type: citus
  database: sharded
  postgres:
    version: '15'
  coordinator:
    instances: 2
    pods:
      persistentVolume:
        size: 20Gi
  shards:
    clusters: 3
    instancesPerCluster: 2
    pods:
      persistentVolume:
        size: 50Gi
";

/// The cluster the guide's `large-cluster-backup` backs up.
pub const LARGE_CLUSTER: &str = "apiVersion: stackgres.io/v1alpha1
kind: SGShardedCluster
metadata:
  name: my-large-sharded-cluster
spec:
  type: ddp
  postgres:
    version: '15'
  coordinator:
    instances: 1
  shards:
    clusters: 8
    instancesPerCluster: 1
";

/// Guide, Prerequisites: backups configured on the cluster.
pub const PREREQUISITES: &str = "apiVersion: stackgres.io/v1alpha1
kind: SGShardedCluster
metadata:
  name: my-sharded-cluster
spec:
  configurations:
    backups:
      - sgObjectStorage: my-backup-storage
        cronSchedule: '0 5 * * *'
        retention: 7
        compression: lz4
";

/// Guide, Creating Manual Backups, Managed Lifecycle and Timeout Configuration: the four
/// SGShardedBackups.
pub const BACKUPS: [&str; 4] = [
    "apiVersion: stackgres.io/v1
kind: SGShardedBackup
metadata:
  name: manual-backup
spec:
  sgShardedCluster: my-sharded-cluster
",
    "apiVersion: stackgres.io/v1
kind: SGShardedBackup
metadata:
  name: manual-backup-with-options
spec:
  sgShardedCluster: my-sharded-cluster
  managedLifecycle: false    # Don't auto-delete with retention policy
  timeout: PT2H              # 2 hour timeout
  maxRetries: 3              # Retry up to 3 times on failure
",
    "apiVersion: stackgres.io/v1
kind: SGShardedBackup
metadata:
  name: auto-managed-backup
spec:
  sgShardedCluster: my-sharded-cluster
  managedLifecycle: true  # Subject to retention policy
",
    "apiVersion: stackgres.io/v1
kind: SGShardedBackup
metadata:
  name: large-cluster-backup
spec:
  sgShardedCluster: my-large-sharded-cluster
  timeout: PT6H  # 6 hours
",
];

/// Guide, Automated Backups.
pub const AUTOMATED: &str = "apiVersion: stackgres.io/v1alpha1
kind: SGShardedCluster
metadata:
  name: my-sharded-cluster
spec:
  configurations:
    backups:
      - sgObjectStorage: s3-backup-storage
        cronSchedule: '0 */6 * * *'  # Every 6 hours
        retention: 14                 # Keep 14 backups
        compression: lz4
        performance:
          maxNetworkBandwidth: 100000000  # 100 MB/s
          maxDiskBandwidth: 100000000
          uploadDiskConcurrency: 2
";

/// Guide, Restoring from a Backup: a new cluster from `manual-backup`.
pub const RESTORE: &str = "apiVersion: stackgres.io/v1alpha1
kind: SGShardedCluster
metadata:
  name: restored-sharded-cluster
spec:
  type: citus
  database: sharded
  postgres:
    version: '15'
  coordinator:
    instances: 2
    pods:
      persistentVolume:
        size: 20Gi
  shards:
    clusters: 3
    instancesPerCluster: 2
    pods:
      persistentVolume:
        size: 50Gi
  initialData:
    restore:
      fromBackup:
        name: manual-backup
";
