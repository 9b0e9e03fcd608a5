/// ControllerCore: the one engine behind every mode of `chebackup`.
///
/// Terms:
/// - *resource*: one of Che's backup custom resources (`CheBackupServerConfiguration`,
///   `CheClusterBackup`, `CheClusterRestore`), as the Che operator defined them.
/// - *operation*: a backup or restore resource; only creating one starts work, and its `status`
///   (state, stage, message, snapshotId) tracks it (`Engine.run`).
/// - *driver*: what a mode supplies (`Drivers`): the resource store, secrets, the agent
///   directory, the installation's objects, the internal backup server, Che's server and the
///   agent token. `LocalMode` implements them over files, `Kubernetes` over the API server.
/// - *backup server*: a repository URL and its secrets (`BackupServer`), built from a
///   configuration in exactly one place (`BackupServer.init(configuration:secrets:)`).
///
/// No argument parsing, no YAML and no printing here: commands wire a mode and report.
