import Foundation
import Subprocess
import Testing

/// Hooks run with their output read all along: a hook that prints more than a pipe holds
/// (64 KiB) must finish, not block until its time-out.
@Suite struct HookTests {
    @Test func aChattyHookFinishes() async throws {
        try await runHook("head -c 2000000 /dev/zero | tr '\\0' x; echo; echo done", timeout: .seconds(120), what: "pre-backup")
    }

    @Test func aFailingHookNamesItsLastOutputLines() async throws {
        do {
            try await runHook("head -c 300000 /dev/zero | tr '\\0' y; echo; echo 'cannot freeze the database' >&2; echo 'see the log'; exit 3",
                              timeout: .seconds(120), what: "pre-backup")
            Issue.record("a failing hook succeeded")
        } catch let error as SubprocessError {
            #expect(error.message.contains("pre-backup hook failed (exit status 3)"), "\(error.message)")
            #expect(error.message.contains("cannot freeze the database") && error.message.contains("see the log"), "\(error.message)")
            #expect(error.message.count < 4500, "only the tail is kept")
        }
    }
}
