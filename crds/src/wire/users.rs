//! [`Users`]: one server's VLESS users by email, as a persistent map.
//!
//! Large VLESS servers hold 100,000 users and change one at a time, so
//! the set is built to make one change cost one user everywhere it goes:
//! cloning a set shares it; comparing a set with one derived from it, and
//! listing their differences, visits only the parts that differ; its
//! fingerprint ([`Users::hash`]) is kept up to date by every insert and
//! remove instead of being recomputed over the whole set.
//!
//! On the wire a set is a JSON list of users sorted by email (an older
//! peer sent and reads exactly that).

use std::fmt;

use serde::de::{Error as _, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::VlessUser;

/// One server's users, unique by email, iterated in email order.
#[derive(Clone, Default)]
pub struct Users {
    by_email: imbl::OrdMap<String, VlessUser>,
    /// Sum (wrapping) of [`user_hash`] over the set.
    sum: u64,
}

impl Users {
    /// An empty set.
    pub fn new() -> Users {
        Users::default()
    }

    /// Puts `user` in, replacing (and returning) the one with its email.
    pub fn insert(&mut self, user: VlessUser) -> Option<VlessUser> {
        if self.by_email.get(&user.email) == Some(&user) {
            // Unchanged: the map stays as it is, shared with its clones.
            return Some(user);
        }
        self.sum = self.sum.wrapping_add(user_hash(&user));
        let old = self.by_email.insert(user.email.clone(), user);
        if let Some(old) = &old {
            self.sum = self.sum.wrapping_sub(user_hash(old));
        }
        old
    }

    /// Takes the user with `email` out.
    pub fn remove(&mut self, email: &str) -> Option<VlessUser> {
        let old = self.by_email.remove(email)?;
        self.sum = self.sum.wrapping_sub(user_hash(&old));
        Some(old)
    }

    /// The user with `email`.
    pub fn get(&self, email: &str) -> Option<&VlessUser> {
        self.by_email.get(email)
    }

    /// Whether a user has `email`.
    pub fn contains(&self, email: &str) -> bool {
        self.by_email.contains_key(email)
    }

    pub fn len(&self) -> usize {
        self.by_email.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_email.is_empty()
    }

    /// The users in email order.
    pub fn iter(&self) -> impl Iterator<Item = &VlessUser> {
        self.by_email.values()
    }

    /// The set's fingerprint: 16 hex digits, the same as [`users_hash`]
    /// of its users. Constant time.
    pub fn hash(&self) -> String {
        format!("{:016x}", self.sum)
    }

    /// What turns `self` into `new`: users of `new` that `self` lacks or
    /// has otherwise (different id or flow), and emails of `self` that
    /// `new` lacks; both in email order. Visits only the parts of the two
    /// maps that are not shared, so a set and one derived from it by a few
    /// changes compare in time proportional to the changes.
    pub fn changes_to(&self, new: &Users) -> (Vec<VlessUser>, Vec<String>) {
        let (mut upserted, mut removed) = (Vec::new(), Vec::new());
        for item in self.by_email.diff(&new.by_email) {
            match item {
                imbl::ordmap::DiffItem::Add(_, user) => upserted.push(user.clone()),
                imbl::ordmap::DiffItem::Update { new: (_, user), .. } => {
                    upserted.push(user.clone())
                }
                imbl::ordmap::DiffItem::Remove(email, _) => removed.push(email.clone()),
            }
        }
        (upserted, removed)
    }
}

/// The fingerprint of a user set: 16 hex digits, the wrapping sum of each
/// user's [`user_hash`] (the first 8 bytes, big-endian, of SHA-256 over
/// `email NUL id NUL flow LF`, `flow` as specs spell it). A sum, so it does
/// not depend on order and one insert or remove updates it in constant
/// time. Both sides compute it: the operator for
/// [`super::VlessAssignment::users_hash`], the agent to check a set it
/// rebuilt from a delta.
pub fn users_hash<'a>(users: impl IntoIterator<Item = &'a VlessUser>) -> String {
    let sum = users
        .into_iter()
        .fold(0u64, |sum, user| sum.wrapping_add(user_hash(user)));
    format!("{sum:016x}")
}

/// One user's part of a set's fingerprint.
fn user_hash(user: &VlessUser) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(user.email.as_bytes());
    hasher.update([0]);
    hasher.update(user.id.expose().as_bytes());
    hasher.update([0]);
    hasher.update(user.flow.as_str().as_bytes());
    hasher.update([b'\n']);
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

impl PartialEq for Users {
    /// Same users (emails, ids, flows). Sets derived from one another
    /// compare in time proportional to their differences.
    fn eq(&self, other: &Users) -> bool {
        self.sum == other.sum && self.by_email == other.by_email
    }
}

impl Eq for Users {}

impl fmt::Debug for Users {
    /// The users as a list (ids stay hidden: `SecretValue`'s `Debug`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl FromIterator<VlessUser> for Users {
    /// The set of `users`; of two with one email, the later stays.
    fn from_iter<I: IntoIterator<Item = VlessUser>>(users: I) -> Users {
        let mut set = Users::new();
        for user in users {
            set.insert(user);
        }
        set
    }
}

impl From<Vec<VlessUser>> for Users {
    fn from(users: Vec<VlessUser>) -> Users {
        users.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a Users {
    type Item = &'a VlessUser;
    type IntoIter = imbl::ordmap::Values<'a, String, VlessUser, imbl::shared_ptr::DefaultSharedPtr>;

    fn into_iter(self) -> Self::IntoIter {
        self.by_email.values()
    }
}

impl Serialize for Users {
    /// A list sorted by email.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for user in self.iter() {
            seq.serialize_element(user)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Users {
    /// A list of users in any order; two with one email are an error.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Users, D::Error> {
        deserializer.deserialize_seq(UsersVisitor)
    }
}

struct UsersVisitor;

impl<'de> Visitor<'de> for UsersVisitor {
    type Value = Users;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of VLESS users with distinct emails")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Users, A::Error> {
        let mut users = Users::new();
        while let Some(user) = seq.next_element::<VlessUser>()? {
            let email = user.email.clone();
            if users.insert(user).is_some() {
                return Err(A::Error::custom(format!(
                    "user email {email:?} appears twice; each user of a server needs its own email"
                )));
            }
        }
        Ok(users)
    }
}

#[cfg(test)]
mod tests;
