//! deskbridge: connects service desks to identity decision points. Tickets are intake and
//! evidence; the decision belongs to the policy owner.

pub mod decision;
pub mod store;
pub mod mapping;
pub mod render;
pub mod schema;
