import ArgumentParser
import Foundation
import Repository
import Storage

struct RepoKey: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key", abstract: "Manage the repository's passwords (several may open it).",
        subcommands: [RepoKeyList.self, RepoKeyAdd.self, RepoKeyRemove.self, RepoKeyPasswd.self])
}

/// Where a new password comes from: a file, or typed twice on the terminal; never an argument.
struct NewPasswordOptions: ParsableArguments {
    @Option(help: "Read the new password from this file (else it is asked twice on the terminal).") var newPasswordFile: String?

    func newPassword() throws -> String {
        if let newPasswordFile {
            guard let text = try? String(contentsOfFile: newPasswordFile, encoding: .utf8) else {
                throw CLIError("cannot read the new password file \(newPasswordFile)")
            }
            let password = text.trimmingCharacters(in: .newlines)
            guard !password.isEmpty else { throw CLIError("the new password file \(newPasswordFile) is empty") }
            return password
        }
        guard let first = readSecretFromTerminal("new password: ") else {
            throw CLIError("no terminal to ask for the new password: give --new-password-file FILE")
        }
        guard !first.isEmpty else { throw CLIError("the new password is empty") }
        guard readSecretFromTerminal("enter it again: ") == first else { throw CLIError("the two passwords differ; nothing was changed") }
        return first
    }
}

struct RepoKeyList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the key files (* marks the one in use).")
    @OptionGroup var repo: RepositoryOptionsGroup
    @Flag(help: "Print JSON.") var json = false

    struct Row: Encodable { let id: String; let current: Bool; let created: Date?; let hostname: String?; let username: String?; let problem: String? }

    func run() async throws {
        try await runReportingErrors { pool in
            let repository = try await repo.openRepository(pool: pool)
            let keys = try await repository.listKeys()
            if json {
                printOut(Format.json(keys.map { Row(id: $0.id.hex, current: $0.current, created: $0.created, hostname: $0.hostname,
                                                    username: $0.username, problem: $0.problem) }))
                return
            }
            printOut("  ID        Created               User          Host")
            for key in keys {
                let created = key.created.map { String(formatTime($0).prefix(19)) } ?? "?"
                printOut("\(key.current ? "*" : " ") \(key.id.short)  \(created)  \(key.username ?? "?")  \(key.hostname ?? "?")\(key.problem.map { "  (unreadable: \($0))" } ?? "")")
            }
        }
    }
}

struct RepoKeyAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "add", abstract: "Add a password: a new key file for the same master keys.")
    @OptionGroup var repo: RepositoryOptionsGroup
    @OptionGroup var new: NewPasswordOptions

    func run() async throws {
        try await runReportingErrors { pool in
            let password = try new.newPassword()
            try await repo.withLockedRepository(pool: pool, operation: "key add") { repository in
                let id = try await repository.addKey(password: password)
                printOut("added key \(id.short)")
            }
        }
    }
}

struct RepoKeyRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove", abstract: "Remove a key file (never the one in use, never the last one).")
    @OptionGroup var repo: RepositoryOptionsGroup
    @Argument(help: "The key's id (a unique prefix).") var id: String

    func run() async throws {
        try await runReportingErrors { pool in
            try await repo.withLockedRepository(pool: pool, exclusive: true, operation: "key remove") { repository in
                let key = try await repository.resolveKey(id)
                try await repository.removeKey(key)
                printOut("removed key \(key.short)")
            }
        }
    }
}

struct RepoKeyPasswd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "passwd", abstract: "Change the password in use: a new key file, then the old one removed.")
    @OptionGroup var repo: RepositoryOptionsGroup
    @OptionGroup var new: NewPasswordOptions

    func run() async throws {
        try await runReportingErrors { pool in
            let password = try new.newPassword()
            try await repo.withLockedRepository(pool: pool, exclusive: true, operation: "key passwd") { repository in
                let id = try await repository.changePassword(to: password)
                printOut("password changed: key \(id.short) replaces the old one")
            }
        }
    }
}
