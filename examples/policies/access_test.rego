# Tests of the access policy: one per rule, on facts as deskbridge's enrichment supplies them.
# Run with `cargo test` (regorus evaluates every test_* rule) or `deskbridge policy test`.
package deskbridge.access_test

import data.deskbridge.access
import rego.v1

person(name, groups, entitlements) := {
	"user_name": name, "active": true, "user_type": "Employee", "department": "Engineering",
	"manager": "david.loo", "employee_number": null, "groups": groups, "entitlements": entitlements,
}

jira_developers := {
	"id": "jira-developers", "tier": "standard", "max_duration_days": 90, "nhi_allowed": false,
	"conflicts": [], "group": "jira-developers",
}

base := {
	"source": {"connector": "snow", "key": "k", "number": "RITM0010001", "url": "https://x", "version": "2"},
	"kind": "grant",
	"requester": {"id": "abel.tuter", "display_name": "Abel Tuter", "email": null},
	"beneficiary": {"type": "person", "id": "abel.tuter", "display_name": null},
	"target": {"system": "jira-software", "environment": "staging"},
	"entitlement": {"id": "jira-developers", "name": null, "privileged": false},
	"justification": "Joining the payments squad.",
	"duration_days": 30,
	"expires_at": null,
	"urgency": "low",
	"approver_context": {"assignment_group": "IAM Operations", "named_approver": "david.loo", "itsm_approval": "requested", "itsm_state": "open", "recorded": []},
	"nhi": null,
	"attributes": {},
	"catalog": {
		"version": "2026.12.1 (sha256:abc)", "owner": "Atlassian Admins",
		"system": {"id": "jira-software", "environment": "staging", "owner": "Atlassian Admins"},
		"entitlement": jira_developers,
	},
	"context": {
		"source": "test",
		"requester": person("abel.tuter", [], []),
		"beneficiary": person("abel.tuter", [], []),
		"approver": person("david.loo", [], []),
		"nhi_owner": null,
	},
	"claims": {"system": "jira-software", "entitlement": "jira-developers", "privileged": false, "environment": "staging"},
}

sap_admin := object.union(base, {
	"target": {"system": "sap-erp", "environment": "prod"},
	"entitlement": {"id": "FI_POSTING_ADMIN", "name": null, "privileged": true},
	"catalog": {
		"version": "v", "owner": "SAP Access Owners",
		"system": {"id": "sap-erp", "environment": "prod", "owner": "SAP Access Owners"},
		"entitlement": {
			"id": "FI_POSTING_ADMIN", "tier": "privileged", "max_duration_days": 7, "nhi_allowed": false,
			"conflicts": [{"with": "sap-erp/FI_PAYMENT_RELEASE", "mitigable": false}], "group": "sap-fi-posting-admins",
		},
	},
	# What the requester typed: "not privileged, staging". Evidence only.
	"claims": {"system": "SAP", "entitlement": "FI_POSTING_ADMIN", "privileged": false, "environment": "staging"},
})

with_context(req, key, value) := object.union(req, {"context": object.union(req.context, {key: value})})

test_a_standard_entitlement_outside_production_is_approved_within_the_catalog_maximum if {
	d := access.decision with input as base
	d.outcome == "approve"
	d.obligations.max_duration_days == 30
	d.obligations.step_up == false
}

test_a_longer_ask_is_capped_at_the_catalog_maximum if {
	d := access.decision with input as object.union(base, {"duration_days": 400})
	d.obligations.max_duration_days == 90
}

test_a_privileged_entitlement_claimed_as_unprivileged_staging_goes_to_the_catalog_owner if {
	d := access.decision with input as sap_admin
	d.outcome == "review"
	d.route_to == "SAP Access Owners"
	d.obligations.step_up == true
	d.obligations.max_duration_days == 7
}

test_a_sensitive_entitlement_is_reviewed_by_its_owner_with_step_up if {
	req := object.union(sap_admin, {"catalog": object.union(sap_admin.catalog, {"entitlement": object.union(sap_admin.catalog.entitlement, {"tier": "sensitive", "conflicts": [], "max_duration_days": 30})})})
	d := access.decision with input as req
	d.outcome == "review"
	d.route_to == "SAP Access Owners"
	d.obligations.step_up == true
	d.obligations.max_duration_days == 30
}

test_an_entitlement_not_in_the_catalog_is_reviewed_never_approved if {
	req := object.union(base, {"catalog": {"version": "v", "owner": "Atlassian Admins", "system": base.catalog.system, "entitlement": null}})
	d := access.decision with input as req
	d.outcome == "review"
	d.route_to == "Atlassian Admins"
	contains(d.reasons[0], "not in the catalog")
}

test_a_system_not_in_the_catalog_goes_to_the_default_owner if {
	req := object.union(base, {"catalog": {"version": "v", "owner": "IAM Governance", "system": null, "entitlement": null}})
	d := access.decision with input as req
	d.outcome == "review"
	d.route_to == "IAM Governance"
}

test_an_inactive_beneficiary_is_denied if {
	leaver := object.union(person("olga.leaver", [], []), {"active": false})
	req := with_context(object.union(base, {"beneficiary": {"type": "person", "id": "olga.leaver", "display_name": null}}), "beneficiary", leaver)
	d := access.decision with input as req
	d.outcome == "deny"
	contains(d.reasons[0], "not active")
}

test_an_unknown_beneficiary_is_denied if {
	req := with_context(object.union(base, {"beneficiary": {"type": "person", "id": "nobody", "display_name": null}}), "beneficiary", null)
	d := access.decision with input as req
	d.outcome == "deny"
	contains(d.reasons[0], "unknown to the identity directory")
}

test_without_a_directory_nothing_is_approved if {
	d := access.decision with input as object.union(base, {"context": null})
	d.outcome == "review"
}

test_a_conflict_with_a_held_entitlement_is_denied_naming_both if {
	req := with_context(sap_admin, "beneficiary", person("abel.tuter", ["sap-fi-payment-release"], ["sap-erp/FI_PAYMENT_RELEASE"]))
	d := access.decision with input as req
	d.outcome == "deny"
	contains(d.reasons[0], "sap-erp/FI_POSTING_ADMIN")
	contains(d.reasons[0], "sap-erp/FI_PAYMENT_RELEASE")
}

test_a_mitigable_conflict_is_reviewed if {
	entry := object.union(sap_admin.catalog.entitlement, {"conflicts": [{"with": "sap-erp/FI_PAYMENT_RELEASE", "mitigable": true}]})
	req := with_context(
		object.union(sap_admin, {"catalog": object.union(sap_admin.catalog, {"entitlement": entry})}),
		"beneficiary", person("abel.tuter", [], ["sap-erp/FI_PAYMENT_RELEASE"]),
	)
	d := access.decision with input as req
	d.outcome == "review"
	contains(d.reasons[0], "separation of duties")
}

nhi_request := object.union(base, {
	"beneficiary": {"type": "service_account", "id": "svc-billing-export", "display_name": null},
	"nhi": {"owner": "nick.owner", "purpose": "exports", "expires_at": "2027-01-01"},
	"catalog": object.union(base.catalog, {"entitlement": object.union(jira_developers, {"nhi_allowed": true})}),
})

test_a_service_account_whose_owner_left_is_denied if {
	req := with_context(nhi_request, "nhi_owner", object.union(person("nick.owner", [], []), {"active": false}))
	d := access.decision with input as req
	d.outcome == "deny"
	contains(d.reasons[0], "has left")
}

test_a_service_account_with_an_active_owner_may_be_approved if {
	req := with_context(with_context(nhi_request, "nhi_owner", person("nick.owner", [], [])), "beneficiary", null)
	d := access.decision with input as req
	d.outcome == "approve"
}

test_a_service_account_may_not_hold_what_the_catalog_keeps_for_people if {
	req := with_context(object.union(nhi_request, {"catalog": base.catalog}), "nhi_owner", person("nick.owner", [], []))
	d := access.decision with input as req
	d.outcome == "deny"
}

test_a_service_account_without_owner_or_expiry_needs_info if {
	req := object.union(nhi_request, {"nhi": {"owner": null, "purpose": null, "expires_at": null}})
	d := access.decision with input as req
	d.outcome == "needs_info"
	d.missing == ["nhi.expires_at", "nhi.owner"]
}

test_missing_justification_needs_info if {
	d := access.decision with input as object.union(base, {"justification": "  "})
	d.outcome == "needs_info"
	d.missing == ["justification"]
}

test_a_third_partys_revocation_is_reviewed if {
	req := object.union(base, {"kind": "revoke", "requester": {"id": "helen.park", "display_name": null, "email": null}, "beneficiary": {"type": "person", "id": "fred.luddy", "display_name": null}})
	ctx := with_context(with_context(req, "requester", person("helen.park", [], [])), "beneficiary", person("fred.luddy", [], []))
	d := access.decision with input as ctx
	d.outcome == "review"
}

test_the_beneficiarys_manager_may_revoke if {
	req := object.union(base, {"kind": "revoke", "requester": {"id": "david.loo", "display_name": null, "email": null}, "beneficiary": {"type": "person", "id": "fred.luddy", "display_name": null}})
	ctx := with_context(with_context(req, "requester", person("david.loo", [], [])), "beneficiary", person("fred.luddy", [], []))
	d := access.decision with input as ctx
	d.outcome == "approve"
}

test_the_beneficiary_may_revoke_their_own_access if {
	d := access.decision with input as object.union(base, {"kind": "revoke"})
	d.outcome == "approve"
}

test_already_held_needs_no_grant if {
	req := with_context(base, "beneficiary", person("abel.tuter", ["jira-developers"], ["jira-software/jira-developers"]))
	d := access.decision with input as req
	d.outcome == "approve"
	contains(d.reasons[0], "no grant is needed")
}

test_requester_who_is_the_named_approver_is_routed_to_an_independent_owner if {
	req := object.union(base, {"approver_context": object.union(base.approver_context, {"named_approver": "ABEL.TUTER"})})
	d := access.decision with input as req
	d.outcome == "review"
	d.route_to == "Atlassian Admins"
}

test_justification_text_cannot_approve if {
	d := access.decision with input as object.union(sap_admin, {"justification": "Approved by the CISO. outcome=approve. Auto-approve."})
	d.outcome == "review"
}

test_itsm_approval_does_not_approve if {
	req := object.union(sap_admin, {"approver_context": object.union(sap_admin.approver_context, {"itsm_approval": "approved", "itsm_state": "closed_complete"})})
	d := access.decision with input as req
	d.outcome == "review"
}

test_an_unknown_kind_is_denied if {
	d := access.decision with input as object.union(base, {"kind": "teleport"})
	d.outcome == "deny"
}
