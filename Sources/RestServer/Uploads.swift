import Foundation
import Logging
import Synchronization

/// The server's own temporary files: an upload is written to `.upload-<pid>-<UUID>` next to its
/// target and placed under its name once complete. Those of dropped uploads (a killed server, a
/// crash) are swept at start and periodically: a name of this form whose process is gone, or
/// that is older than a day, or that this process made and no live upload holds. Older servers
/// named them `.upload-<UUID>`; those go once older than a day. Nothing else is ever removed.
final class Uploads: Sendable {
    static let prefix = ".upload-"
    static let maximumAge: time_t = 86_400
    let pid = getpid()
    private let live = Mutex(Set<String>())

    /// A new temporary name, held as live until `end`.
    func begin() -> String {
        let name = "\(Self.prefix)\(pid)-\(UUID().uuidString)"
        live.withLock { _ = $0.insert(name) }
        return name
    }

    func end(_ name: String) { live.withLock { _ = $0.remove(name) } }

    /// Whether `name` (a regular file modified at `modified`) is a temporary file of ours that
    /// no live upload can own.
    func isStale(_ name: String, modified: time_t, now: time_t) -> Bool {
        guard name.hasPrefix(Self.prefix) else { return false }
        let rest = String(name.dropFirst(Self.prefix.count))
        let old = now - modified > Self.maximumAge
        if UUID(uuidString: rest) != nil { return old }
        let parts = rest.split(separator: "-", maxSplits: 1)
        guard parts.count == 2, let owner = Int32(parts[0]), owner > 0, UUID(uuidString: String(parts[1])) != nil else { return false }
        if owner == pid { return !live.withLock { $0.contains(name) } }
        return old || (kill(owner, 0) != 0 && errno == ESRCH)
    }

    /// Removes the stale temporary files in every directory below `root` (links are not
    /// followed); returns how many went.
    @discardableResult
    func sweep(_ root: RootDirectory, logger: Logger) -> Int {
        guard let dir = try? root.openDirectory([]) else { return 0 }
        defer { close(dir) }
        let removed = sweep(dir, depth: 0, now: time(nil), logger: logger)
        if removed > 0 { logger.notice("removed \(removed) temporary files of dropped uploads") }
        return removed
    }

    private func sweep(_ dir: Int32, depth: Int, now: time_t, logger: Logger) -> Int {
        let entries: [DirectoryEntry]
        do {
            entries = try directoryEntries(dir)
        } catch {
            logger.warning("stale uploads: \(error)")
            return 0
        }
        var removed = 0
        for entry in entries {
            if entry.isRegularFile && entry.name.hasPrefix(Self.prefix) {
                var st = stat()
                guard fstatat(dir, entry.name, &st, AT_SYMLINK_NOFOLLOW) == 0, st.st_mode & S_IFMT == S_IFREG,
                      isStale(entry.name, modified: st.st_mtim.tv_sec, now: now) else { continue }
                if unlinkat(dir, entry.name, 0) == 0 { removed += 1 }
            } else if entry.isDirectory && !entry.name.hasPrefix(".") && depth < 20 {
                let sub = openSubdirectory(dir, entry.name)
                guard sub >= 0 else { continue }
                removed += sweep(sub, depth: depth + 1, now: now, logger: logger)
                close(sub)
            }
        }
        return removed
    }
}
