//! withcache: URL-keyed image cache that lets a fleet pull each image once
