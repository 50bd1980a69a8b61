// Fuzz body for the vote transaction decoder, shared by the cargo-fuzz
// target and the `fuzz_smoke` test. Any input: no panic; whatever decodes
// names a signer as its authority, votes its last slot, and re-encodes
// (with slashguard's own message builder) to a message that decodes to the
// same vote.

/// Run the vote message decoder over `data`.
pub fn vote_tx(data: &[u8]) {
    use slashguard::tower::vote_tx::VoteMessage;

    let Ok(message) = VoteMessage::decode(data) else {
        return;
    };
    let vote = message.vote();
    assert!(message.signers().contains(&vote.authority), "the authority signs");
    assert_eq!(vote.slots().last().copied(), Some(vote.last_vote().slot));
    if let Some(root) = vote.root() {
        assert!(vote.slots().iter().all(|&s| s > root), "root below every slot");
    }
    let payer = message.signers()[0];
    if let Ok(again) = vote.to_legacy_message(payer, message.recent_blockhash()) {
        let back = VoteMessage::decode(&again).expect("a built message decodes");
        assert!(back.vote() == vote, "the rebuilt message casts the same vote");
    }
}
