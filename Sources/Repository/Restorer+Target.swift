import Foundation

extension Restorer {
    /// restic's rules for a restore target that a person names (`repo restore --target`): it
    /// may be missing (it is created), or an empty directory; a non-empty directory only with
    /// `overwrite`, and never something that is not a directory. Callers that restore into
    /// directories they own and expect to be full (the files agent, the installation's objects)
    /// do not call it; `restoreTree` itself refuses only a target that is not a directory.
    public static func checkTarget(_ path: String, overwrite: Bool) throws {
        var st = stat()
        guard stat(path, &st) == 0 else {
            if errno == ENOENT { return }
            throw RepositoryError(.invalidArgument, "cannot use \(path) as the restore target: \(FS.errorText())")
        }
        try refuseNonDirectory(path, st)
        if overwrite { return }
        guard let dir = opendir(path) else {
            throw RepositoryError(.invalidArgument, "cannot list the restore target \(path): \(FS.errorText())")
        }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." {
                throw RepositoryError(.invalidArgument,
                                      "the restore target \(path) is not empty: restore into an empty or new directory, or give --overwrite")
            }
        }
    }

    /// A target that exists must be a directory (a symlink to one is followed): restore never
    /// replaces a file with a directory.
    static func refuseNonDirectory(_ path: String) throws {
        var st = stat()
        guard stat(path, &st) == 0 else { return }  // missing: it is created
        try refuseNonDirectory(path, st)
    }

    private static func refuseNonDirectory(_ path: String, _ st: stat) throws {
        guard st.st_mode & S_IFMT == S_IFDIR else {
            throw RepositoryError(.invalidArgument, "the restore target \(path) exists and is not a directory")
        }
    }
}
