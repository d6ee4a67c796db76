# Tests of the access policy, one per seeded case and a few edges.
# Run with `cargo test` (regorus evaluates every test_* rule) or `opa test examples/policies`.
package deskbridge.access_test

import data.deskbridge.access

base := {
	"source": {"connector": "snow", "key": "k", "number": "RITM0010001", "url": "https://x", "version": "2"},
	"kind": "grant",
	"requester": {"id": "abel.tuter", "display_name": "Abel Tuter", "email": null},
	"beneficiary": {"type": "person", "id": "abel.tuter", "display_name": null},
	"target": {"system": "jira-software", "environment": "staging"},
	"entitlement": {"id": "jira-developers", "name": null, "privileged": false},
	"justification": "Joining the payments squad.",
	"duration_days": 90,
	"expires_at": null,
	"urgency": "low",
	"approver_context": {"assignment_group": "IAM Operations", "named_approver": "david.loo", "itsm_approval": "requested", "itsm_state": "open", "recorded": []},
	"nhi": null,
	"attributes": {},
}

privileged_prod := object.union(base, {
	"target": {"system": "sap-erp", "environment": "prod"},
	"entitlement": {"id": "FI_POSTING_ADMIN", "name": null, "privileged": true},
	"duration_days": 30,
})

test_low_risk_request_is_approved_within_its_duration if {
	d := access.decision with input as base
	d.outcome == "approve"
	d.obligations.max_duration_days == 90
	d.obligations.step_up == false
}

test_a_long_low_risk_request_is_capped_at_ninety_days if {
	d := access.decision with input as object.union(base, {"duration_days": 400})
	d.obligations.max_duration_days == 90
}

test_privileged_production_access_goes_to_the_control_owner_with_step_up if {
	d := access.decision with input as privileged_prod
	d.outcome == "review"
	d.route_to == "SAP Access Owners"
	d.obligations == {"max_duration_days": 7, "step_up": true}
}

test_missing_justification_needs_info if {
	d := access.decision with input as object.union(base, {"justification": "   "})
	d.outcome == "needs_info"
	d.missing == ["justification"]
}

test_service_account_without_owner_or_expiry_needs_info if {
	d := access.decision with input as object.union(base, {
		"kind": "create_identity",
		"beneficiary": {"type": "service_account", "id": "svc-billing-export", "display_name": null},
		"nhi": {"owner": null, "purpose": "Nightly billing export", "expires_at": null},
	})
	d.outcome == "needs_info"
	d.missing == ["nhi.expires_at", "nhi.owner"]
}

test_service_account_with_owner_and_expiry_in_production_is_reviewed if {
	d := access.decision with input as object.union(base, {
		"kind": "create_identity",
		"target": {"system": "aws-billing", "environment": "prod"},
		"beneficiary": {"type": "service_account", "id": "svc-billing-export", "display_name": null},
		"nhi": {"owner": "ivan.petrov", "purpose": "export", "expires_at": "2027-06-30"},
	})
	d.outcome == "review"
	d.route_to == "Cloud Platform Owners"
}

test_requester_who_is_the_named_approver_is_routed_to_an_independent_owner if {
	d := access.decision with input as object.union(base, {
		"requester": {"id": "carol.ng", "display_name": null, "email": null},
		"beneficiary": {"type": "person", "id": "carol.ng", "display_name": null},
		"target": {"system": "workday", "environment": "prod"},
		"approver_context": {"assignment_group": null, "named_approver": "Carol.Ng", "itsm_approval": null, "itsm_state": null, "recorded": []},
	})
	d.outcome == "review"
	d.route_to == "HR Systems Owners"
	contains(d.reasons[0], "separation of duties")
}

test_revocation_is_approved if {
	d := access.decision with input as object.union(privileged_prod, {"kind": "revoke", "justification": null})
	d.outcome == "approve"
}

test_justification_text_cannot_approve if {
	d := access.decision with input as object.union(privileged_prod, {"justification": "approved by the CISO, auto-approve"})
	d.outcome == "review"
}

test_itsm_approval_does_not_approve if {
	d := access.decision with input as object.union(privileged_prod, {"approver_context": {
		"assignment_group": null, "named_approver": "david.loo", "itsm_approval": "approved", "itsm_state": "closed_complete",
		"recorded": [{"approver": "david.loo", "state": "approved"}],
	}})
	d.outcome == "review"
}

test_unknown_system_goes_to_iam_governance if {
	d := access.decision with input as object.union(base, {"target": {"system": "mainframe", "environment": "prod"}})
	d.route_to == "IAM Governance"
}

test_an_unknown_kind_is_denied if {
	d := access.decision with input as object.union(base, {"kind": "borrow"})
	d.outcome == "deny"
}
