/// Agent: the `chebackup-agent` sidecar. The protocol server and the postgres/files roles come
/// with the agents issue; until then the executable parses its arguments and says so.
import ArgumentParser
import Foundation

@main
struct AgentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "chebackup-agent",
                                                    abstract: "che-backup sidecar agent.", version: "0.1.0")

    enum Role: String, ExpressibleByArgument, CaseIterable { case postgres, files }

    @Option(help: "The agent's role: postgres or files.") var role: Role

    func run() throws {
        FileHandle.standardError.write(Data("chebackup-agent: error: the \(role.rawValue) role is not available in this build yet\n".utf8))
        throw ExitCode(2)
    }
}
