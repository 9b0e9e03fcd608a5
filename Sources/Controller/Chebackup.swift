/// Controller: the `chebackup` command line. Commands are declared here as data; `run()` only
/// wires library pieces together. This release has the low-level `repo` commands.
import ArgumentParser
import Foundation

@main
struct Chebackup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chebackup",
        abstract: "Backup and restore of an Eclipse Che installation.",
        version: "0.1.0",
        subcommands: [ServerBackup.self, ServerRestore.self, CheSnapshots.self, Apply.self, Get.self, Delete.self, ControllerDaemon.self,
                      RepoCommand.self, RestServerCommand.self, WebhookCommand.self, InjectCommand.self]
    )
}

struct RepoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "repo",
        abstract: "Low-level repository commands.",
        subcommands: [RepoInit.self, RepoBackup.self, RepoSnapshots.self, RepoRestore.self, RepoCheck.self, RepoRepair.self, RepoUnlock.self, RepoForget.self, RepoPrune.self, RepoKey.self]
    )
}
