//! Which checkpoints to delete: a pure function of the steps on disk.

/// Steps to delete so that only the newest `keep_last` remain (`keep_last` 0 keeps all).
///
/// ```
/// use pretune::checkpoint::policy::to_delete;
/// assert_eq!(to_delete(&[300, 100, 200], 2), vec![100]);
/// assert_eq!(to_delete(&[100], 0), Vec::<u64>::new());
/// ```
pub fn to_delete(steps: &[u64], keep_last: usize) -> Vec<u64> {
    if keep_last == 0 || steps.len() <= keep_last {
        return Vec::new();
    }
    let mut s = steps.to_vec();
    s.sort_unstable();
    s[..s.len() - keep_last].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_last_n_deletes_the_oldest_beyond_n() {
        assert_eq!(to_delete(&[5, 1, 4, 2, 3], 3), vec![1, 2]);
        assert_eq!(to_delete(&[5, 1], 3), Vec::<u64>::new());
        assert_eq!(to_delete(&[7, 8, 9], 1), vec![7, 8]);
    }
}
