//! The media the stand-in holds: the notes customers send (which voxline
//! fetches) and the files voxline uploads (its voice replies). Capped in
//! count and in bytes; the oldest goes first when either cap is reached.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// One stored file.
#[derive(Debug, Clone)]
pub struct StoredMedia {
    pub bytes: Bytes,
    pub mime_type: String,
    pub sha256: [u8; 32],
}

impl StoredMedia {
    pub fn new(bytes: Bytes, mime_type: &str) -> Self {
        let sha256 = Sha256::digest(&bytes).into();
        Self {
            bytes,
            mime_type: mime_type.to_string(),
            sha256,
        }
    }
}

#[derive(Debug)]
pub struct MediaStore {
    items: HashMap<String, StoredMedia>,
    /// Ids, oldest first.
    order: VecDeque<String>,
    bytes: u64,
    max_items: usize,
    max_bytes: u64,
}

impl MediaStore {
    pub fn new(max_items: usize, max_bytes: u64) -> Self {
        Self {
            items: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            max_items: max_items.max(1),
            max_bytes,
        }
    }

    /// Keeps `media` under `id`, evicting the oldest files until both caps
    /// hold. A file larger than the whole byte cap is refused (`false`).
    pub fn insert(&mut self, id: String, media: StoredMedia) -> bool {
        let size = media.bytes.len() as u64;
        if size > self.max_bytes {
            return false;
        }
        self.remove(&id);
        while self.items.len() >= self.max_items || self.bytes + size > self.max_bytes {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(old) = self.items.remove(&oldest) {
                self.bytes -= old.bytes.len() as u64;
            }
        }
        self.bytes += size;
        self.order.push_back(id.clone());
        self.items.insert(id, media);
        true
    }

    fn remove(&mut self, id: &str) {
        if let Some(old) = self.items.remove(id) {
            self.bytes -= old.bytes.len() as u64;
            self.order.retain(|i| i != id);
        }
    }

    pub fn get(&self, id: &str) -> Option<&StoredMedia> {
        self.items.get(id)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(n: usize) -> StoredMedia {
        StoredMedia::new(Bytes::from(vec![0u8; n]), "audio/ogg")
    }

    #[test]
    fn the_oldest_goes_when_a_cap_is_reached() {
        let mut store = MediaStore::new(3, 100);
        for i in 0..4 {
            assert!(store.insert(format!("m{i}"), media(10)));
        }
        assert_eq!(store.len(), 3);
        assert!(store.get("m0").is_none());
        assert!(store.get("m3").is_some());
        // 30 bytes held; 81 more push out the two oldest.
        assert!(store.insert("big".into(), media(81)));
        assert_eq!(store.len(), 2);
        assert_eq!(store.bytes(), 91);
        assert!(store.get("m1").is_none() && store.get("m2").is_none());
        assert!(!store.insert("huge".into(), media(101)));
        assert_eq!(store.bytes(), 91);
    }

    #[test]
    fn replacing_an_id_does_not_count_it_twice() {
        let mut store = MediaStore::new(10, 100);
        store.insert("a".into(), media(40));
        store.insert("a".into(), media(50));
        assert_eq!((store.len(), store.bytes()), (1, 50));
    }
}
