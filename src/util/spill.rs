//! External sorting of fixed-size items in bounded memory, for the checks that must see every
//! row of an input or output whatever its size (duplicate ids: `input::duplicates`; the resume plan: `output::resume_sorted`).
//!
//! A [`Sorter`] keeps up to a fixed number of items in memory; when full it sorts them and
//! appends them as a sorted run to one spill file, and [`Sorter::finish`] merges the runs (a
//! k-way merge reading each run through an 8 KB buffer). The spill file is created in
//! [`dir()`] (the output's folder during `run`, else the system temp folder) and unlinked as soon
//! as it is open, so it is gone at exit whatever happens (kill -9 included); where unlinking an
//! open file fails, it is removed when the sorter is dropped.
//!
//! Test knob (debug builds only): `PROMPTBATCH_TEST_SPILL_ITEMS=N` caps every sorter (and the
//! in-memory duplicate-id set) at N items, so that tests reach the spill paths with small inputs.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// An item that sorts and has a fixed-size binary form.
pub(crate) trait Item: Copy + Ord {
    /// Bytes of the binary form.
    const SIZE: usize;
    /// Appends the binary form.
    fn put(&self, out: &mut Vec<u8>);
    /// Reads the binary form (`bytes.len() == SIZE`).
    fn get(bytes: &[u8]) -> Self;
}

impl Item for (u128, u64) {
    const SIZE: usize = 24;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_le_bytes());
        out.extend_from_slice(&self.1.to_le_bytes());
    }
    fn get(b: &[u8]) -> Self {
        (
            u128::from_le_bytes(b[..16].try_into().unwrap()),
            u64::from_le_bytes(b[16..24].try_into().unwrap()),
        )
    }
}

impl<const N: usize> Item for [u64; N] {
    const SIZE: usize = 8 * N;
    fn put(&self, out: &mut Vec<u8>) {
        for x in self {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    fn get(b: &[u8]) -> Self {
        std::array::from_fn(|i| u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().unwrap()))
    }
}

static DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Spill files go to `dir` from now on (`run`: the output's folder).
pub(crate) fn set_dir(dir: &Path) {
    *DIR.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir.to_path_buf());
}

/// Where spill files go.
pub(crate) fn dir() -> PathBuf {
    DIR.lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_else(std::env::temp_dir)
}

#[cfg(test)]
thread_local! {
    /// Unit tests' cap for the sorters made on this thread.
    pub static TEST_ITEMS: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Items a sorter keeps in memory: `default`, or the debug-build test knob.
pub(crate) fn memory_items(default: usize) -> usize {
    #[cfg(test)]
    if let Some(n) = TEST_ITEMS.with(|n| n.get()) {
        return n;
    }
    #[cfg(debug_assertions)]
    if let Some(n) = std::env::var("PROMPTBATCH_TEST_SPILL_ITEMS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        return n.max(1);
    }
    default
}

/// A temporary file, unlinked at once where possible, else removed on drop (also holds a batch
/// collection's downloaded answers: `batch/answers.rs`).
pub(crate) struct SpillFile {
    pub(crate) file: File,
    leftover: Option<PathBuf>,
    len: u64,
}

impl SpillFile {
    /// A new empty temporary file in `dir`.
    pub(crate) fn create(dir: &Path) -> io::Result<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        loop {
            let path = dir.join(format!(
                ".promptbatch-spill-{}-{}.tmp",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    let leftover = std::fs::remove_file(&path).err().map(|_| path);
                    return Ok(SpillFile {
                        file,
                        leftover,
                        len: 0,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        if let Some(path) = &self.leftover {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Sorts any number of items in bounded memory.
pub(crate) struct Sorter<T: Item> {
    buf: Vec<T>,
    cap: usize,
    dir: PathBuf,
    file: Option<SpillFile>,
    /// (byte offset, items) of each sorted run in the file.
    runs: Vec<(u64, u64)>,
}

impl<T: Item> Sorter<T> {
    /// A sorter holding at most `cap` items in memory (see [`memory_items`]), spilling to `dir`.
    pub(crate) fn new(dir: PathBuf, cap: usize) -> Self {
        Sorter {
            buf: Vec::new(),
            cap: cap.max(1),
            dir,
            file: None,
            runs: Vec::new(),
        }
    }

    /// Adds an item.
    pub(crate) fn push(&mut self, item: T) -> io::Result<()> {
        if self.buf.len() >= self.cap {
            self.spill()?;
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.cap.min(1 << 20));
        }
        self.buf.push(item);
        Ok(())
    }

    /// Sorted runs written to disk so far.
    #[cfg(test)]
    pub(crate) fn spilled_runs(&self) -> usize {
        self.runs.len()
    }

    fn spill(&mut self) -> io::Result<()> {
        self.buf.sort_unstable();
        if self.file.is_none() {
            self.file = Some(SpillFile::create(&self.dir)?);
        }
        let spill = self.file.as_mut().expect("just created");
        let start = spill.len;
        let mut bytes = Vec::with_capacity(1 << 16);
        let mut w = &spill.file;
        for item in &self.buf {
            item.put(&mut bytes);
            if bytes.len() >= 1 << 16 {
                w.write_all(&bytes)?;
                bytes.clear();
            }
        }
        w.write_all(&bytes)?;
        spill.len += (self.buf.len() * T::SIZE) as u64;
        self.runs.push((start, self.buf.len() as u64));
        self.buf.clear();
        Ok(())
    }

    /// All items, in order.
    pub(crate) fn finish(mut self) -> io::Result<Sorted<T>> {
        if self.runs.is_empty() {
            self.buf.sort_unstable();
            return Ok(Sorted::Memory(std::mem::take(&mut self.buf).into_iter()));
        }
        if !self.buf.is_empty() {
            self.spill()?;
        }
        self.buf = Vec::new();
        let file = self.file.take().expect("runs were spilled");
        let mut readers: Vec<RunReader> = self
            .runs
            .iter()
            .map(|&(offset, items)| RunReader {
                offset,
                left: items * T::SIZE as u64,
                buf: Vec::new(),
                pos: 0,
            })
            .collect();
        let mut heap = BinaryHeap::with_capacity(readers.len());
        for (i, r) in readers.iter_mut().enumerate() {
            if let Some(item) = r.next::<T>(&file.file)? {
                heap.push(Reverse((item, i)));
            }
        }
        Ok(Sorted::Merge(Merge {
            file,
            readers,
            heap,
        }))
    }
}

/// Reads one sorted run through a small buffer.
struct RunReader {
    offset: u64,
    left: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl RunReader {
    fn next<T: Item>(&mut self, file: &File) -> io::Result<Option<T>> {
        if self.pos >= self.buf.len() {
            if self.left == 0 {
                return Ok(None);
            }
            let chunk = ((8 << 10) / T::SIZE * T::SIZE) as u64;
            let n = chunk.min(self.left) as usize;
            self.buf.resize(n, 0);
            file.read_exact_at(&mut self.buf, self.offset)?;
            self.offset += n as u64;
            self.left -= n as u64;
            self.pos = 0;
        }
        let item = T::get(&self.buf[self.pos..self.pos + T::SIZE]);
        self.pos += T::SIZE;
        Ok(Some(item))
    }
}

/// The k-way merge of spilled runs.
pub(crate) struct Merge<T: Item> {
    file: SpillFile,
    readers: Vec<RunReader>,
    heap: BinaryHeap<Reverse<(T, usize)>>,
}

/// Sorted items: from memory, or merged from disk.
pub(crate) enum Sorted<T: Item> {
    Memory(std::vec::IntoIter<T>),
    Merge(Merge<T>),
}

impl<T: Item> Iterator for Sorted<T> {
    type Item = io::Result<T>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Sorted::Memory(items) => items.next().map(Ok),
            Sorted::Merge(m) => {
                let Reverse((item, i)) = m.heap.pop()?;
                match m.readers[i].next::<T>(&m.file.file) {
                    Ok(Some(next)) => m.heap.push(Reverse((next, i))),
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                }
                Some(Ok(item))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_across_spilled_runs_and_leaves_no_file() {
        let dir = std::env::temp_dir().join(format!("pb-spill-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut sorter = Sorter::<(u128, u64)>::new(dir.clone(), 7);
        let mut want = Vec::new();
        let mut x: u64 = 12345;
        for i in 0..1000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let item = (u128::from(x % 97) << 70, i);
            want.push(item);
            sorter.push(item).unwrap();
        }
        assert!(sorter.spilled_runs() > 100);
        let got: Vec<_> = sorter.finish().unwrap().map(Result::unwrap).collect();
        want.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "spill file left"
        );
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn small_inputs_stay_in_memory() {
        let mut sorter = Sorter::<(u128, u64)>::new(PathBuf::from("/nonexistent"), 10);
        for i in (0..10u64).rev() {
            sorter.push((0, i)).unwrap();
        }
        let got: Vec<_> = sorter.finish().unwrap().map(|r| r.unwrap().1).collect();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    }
}
