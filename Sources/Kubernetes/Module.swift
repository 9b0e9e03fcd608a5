/// Kubernetes: che-backup as an operator. The engine's drivers (`ControllerCore.Drivers`) over
/// the Kubernetes API: Che's backup custom resources and their `/status`, Secrets, the agent
/// pods (label `chebackup.eclipse.org/agent`), Che's objects (the CheCluster and the Secrets and
/// ConfigMaps labelled `app.kubernetes.io/part-of=che.eclipse.org`), Che's server Deployment
/// (label `app.kubernetes.io/component=che`), core/v1 Events; leader election on the Lease
/// `che-backup-controller` (`Operator`); and chectl's way of running an operation from outside
/// the cluster (`ClusterOperations`).
