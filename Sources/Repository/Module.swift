/// Repository: the encrypted, deduplicating chunk store and its on-disk format (docs/format.md).
///
/// Terms:
/// - *blob*: one piece of content (a chunk of a file or stream, or a serialized tree), named by its
///   `BlobID`, the HMAC-SHA256 of its plaintext under the repository's id key.
/// - *pack*: a stored file holding many encrypted blobs followed by an encrypted header listing
///   them. Packs, index files, snapshots and keys are *objects*, named by the SHA-256 of their
///   stored bytes (`ObjectID`).
/// - *index*: which pack holds which blob, at which offset.
/// - *tree*: one directory's entries (`Node`s), itself stored as a blob.
/// - *snapshot*: the record of one backup: named *parts*, each a file tree or a byte stream.
///
/// Write order is packs, then index, then snapshot, so every snapshot refers only to stored data.
import Foundation

public let formatVersion = 2
